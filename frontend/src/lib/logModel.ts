// The log view's model: every log record of a run, and the display rows of those that pass
// the severity and text filters (a record with a multi-line message or a traceback spans
// several rows). Appending is incremental (only the new records are filtered), so tens of
// thousands of lines stream in without re-filtering what is already there; changing a
// filter re-filters once.

export interface LogEntry {
  sequence: number;
  /** Epoch milliseconds, or undefined. */
  time: number | undefined;
  /** LogSeverity value (0 unspecified … 5 critical). */
  severity: number;
  message: string;
  logger: string;
  caller: string;
  traceback: string;
}

export interface LogFilter {
  /** Lowest severity shown (0: all). */
  minSeverity: number;
  /** Case-insensitive text that the message, logger, caller or traceback contains. */
  query: string;
}

export interface LogRow {
  entry: LogEntry;
  /** 0 for the record's first row, then continuation rows. */
  line: number;
  text: string;
}

export class LogModel {
  readonly entries: LogEntry[] = [];
  private rowEntry: number[] = [];
  private rowLine: number[] = [];
  private lines = new Map<number, string[]>(); // entry index → lines, for multi-line entries
  private matched = 0;
  filter: LogFilter = { minSeverity: 0, query: "" };

  get rowCount(): number {
    return this.rowEntry.length;
  }

  /** Entries that pass the filter. */
  get matchedCount(): number {
    return this.matched;
  }

  private linesOf(index: number): string[] | undefined {
    return this.lines.get(index);
  }

  private matches(e: LogEntry): boolean {
    if (this.filter.minSeverity > 0 && e.severity < this.filter.minSeverity) return false;
    const q = this.filter.query.trim().toLowerCase();
    if (!q) return true;
    return (
      e.message.toLowerCase().includes(q) ||
      e.logger.toLowerCase().includes(q) ||
      e.caller.toLowerCase().includes(q) ||
      e.traceback.toLowerCase().includes(q)
    );
  }

  private addRows(index: number): void {
    const e = this.entries[index]!;
    if (!this.matches(e)) return;
    this.matched += 1;
    const lines = this.linesOf(index);
    const n = lines ? lines.length : 1;
    for (let l = 0; l < n; l++) {
      this.rowEntry.push(index);
      this.rowLine.push(l);
    }
  }

  /** Adds entries (in sequence order); returns the number of rows added. */
  append(entries: readonly LogEntry[]): number {
    const before = this.rowEntry.length;
    for (const e of entries) {
      const index = this.entries.length;
      this.entries.push(e);
      if (e.message.includes("\n") || e.traceback) {
        const lines = e.message.split(/\r?\n/);
        if (e.traceback) lines.push(...e.traceback.replace(/\n$/, "").split(/\r?\n/));
        this.lines.set(index, lines);
      }
      this.addRows(index);
    }
    return this.rowEntry.length - before;
  }

  setFilter(filter: LogFilter): void {
    this.filter = { ...filter };
    this.rowEntry = [];
    this.rowLine = [];
    this.matched = 0;
    for (let i = 0; i < this.entries.length; i++) this.addRows(i);
  }

  row(i: number): LogRow | undefined {
    const index = this.rowEntry[i];
    if (index === undefined) return undefined;
    const entry = this.entries[index]!;
    const line = this.rowLine[i]!;
    const lines = this.linesOf(index);
    return { entry, line, text: lines ? (lines[line] ?? "") : entry.message };
  }
}

/** The rows of a virtualized list to render for a scroll position: [start, end). */
export function visibleRange(
  scrollTop: number,
  viewportHeight: number,
  rowHeight: number,
  rowCount: number,
  overscan = 10,
): { start: number; end: number } {
  const first = Math.floor(scrollTop / rowHeight);
  const count = Math.ceil(viewportHeight / rowHeight);
  const start = Math.max(0, first - overscan);
  const end = Math.min(rowCount, first + count + overscan);
  return { start, end: Math.max(start, end) };
}
