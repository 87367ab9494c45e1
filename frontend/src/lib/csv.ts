// RFC 4180 CSV parsing for output previews: quoted fields with embedded delimiters, quotes
// ("" escapes) and line breaks; CRLF, LF or CR line ends; a limit on the rows kept.

export interface CsvResult {
  rows: string[][];
  /** True when rows were cut at the limit. */
  truncated: boolean;
}

export function parseCsv(text: string, options: { delimiter?: string; maxRows?: number } = {}): CsvResult {
  const delimiter = options.delimiter ?? ",";
  const maxRows = options.maxRows ?? Infinity;
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  let i = 0;
  // A leading byte order mark is not part of the first field.
  if (text.charCodeAt(0) === 0xfeff) i = 1;
  const n = text.length;
  const endRow = () => {
    row.push(field);
    field = "";
    rows.push(row);
    row = [];
  };
  while (i < n) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i += 1;
        continue;
      }
      field += c;
      i += 1;
      continue;
    }
    if (c === '"' && field === "") {
      quoted = true;
      i += 1;
    } else if (c === delimiter) {
      row.push(field);
      field = "";
      i += 1;
    } else if (c === "\r" || c === "\n") {
      endRow();
      i += c === "\r" && text[i + 1] === "\n" ? 2 : 1;
      if (rows.length >= maxRows) return { rows, truncated: i < n };
    } else {
      field += c;
      i += 1;
    }
  }
  // The last line, unless the text ended with a line break.
  if (field !== "" || row.length > 0 || quoted) endRow();
  return { rows, truncated: false };
}

/** Guesses the delimiter of a CSV text from its first line (comma, semicolon or tab). */
export function sniffDelimiter(text: string): string {
  const first = text.slice(0, text.search(/\r|\n|$/));
  const counts = [",", ";", "\t"].map((d) => [d, first.split(d).length - 1] as const);
  counts.sort((a, b) => b[1] - a[1]);
  return counts[0]![1] > 0 ? counts[0]![0] : ",";
}
