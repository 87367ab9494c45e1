// A run's event stream as the UI consumes it: WatchRun from the last sequence seen, resumed
// after a broken stream with `after_sequence`, every event delivered once and in order
// (deduplicated by sequence). Generic over the event type so that it is tested without the
// generated classes.

export interface Sequenced {
  sequence: bigint | number;
}

export function seqOf(e: Sequenced): number {
  return typeof e.sequence === "bigint" ? Number(e.sequence) : e.sequence;
}

/** Keeps the highest sequence delivered; `accept` drops what was already delivered. The
 * store numbers events per run without gaps (until retention drops telemetry, which leaves
 * gaps but never reorders), so "larger than the last one" is the whole dedupe rule. */
export class EventSequencer<E extends Sequenced> {
  last: number;

  constructor(after = 0) {
    this.last = after;
  }

  accept(events: readonly E[]): E[] {
    const out: E[] = [];
    for (const e of events) {
      const s = seqOf(e);
      if (s > this.last) {
        this.last = s;
        out.push(e);
      }
    }
    return out;
  }
}

/** Decides what a failed stream means: "retry" resumes after a pause, "fatal" ends. */
export type ErrorClass = "retry" | "fatal";

export interface WatchOptions<E extends Sequenced> {
  /** Opens WatchRun with after_sequence; yields batches of events. */
  open: (afterSequence: number, signal: AbortSignal) => AsyncIterable<readonly E[]>;
  /** Receives new events only, in order. */
  onEvents: (events: E[]) => void;
  /** Whether an event ends the run (terminal state change): the stream ends after it. */
  isTerminal: (event: E) => boolean;
  /** Classifies an error thrown by the stream. */
  classify: (error: unknown) => ErrorClass;
  /** Told about each reconnection attempt (for a "reconnecting…" note). */
  onRetry?: (attempt: number, delayMs: number, error: unknown) => void;
  /** Told when the stream delivers again after a retry. */
  onConnected?: () => void;
  signal: AbortSignal;
  /** Resume point (0: from the start). */
  after?: number;
  /** Pause before attempt n (1-based). */
  backoff?: (attempt: number) => number;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Whether the run was terminal already (then a cleanly ended stream is complete). */
  terminal?: boolean;
  /** Asked when the stream ended cleanly without a terminal event (the server ends it only
   * after one, so e.g. GetRun says whether the run is over); false resumes. */
  confirmTerminal?: () => Promise<boolean>;
}

export type WatchEnd =
  | { kind: "terminal"; last: number }
  | { kind: "aborted"; last: number }
  | { kind: "failed"; last: number; error: unknown };

export function defaultBackoff(attempt: number): number {
  return Math.min(10_000, 500 * 2 ** Math.min(attempt - 1, 5));
}

export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}

/** Watches until the terminal event (or until aborted, or a fatal error), reconnecting with
 * after_sequence = the last sequence delivered whenever the stream breaks or ends early. */
export async function watchEvents<E extends Sequenced>(opts: WatchOptions<E>): Promise<WatchEnd> {
  const seq = new EventSequencer<E>(opts.after ?? 0);
  const backoff = opts.backoff ?? defaultBackoff;
  const sleep = opts.sleep ?? abortableSleep;
  let terminal = opts.terminal ?? false;
  let attempt = 0;
  for (;;) {
    if (opts.signal.aborted) return { kind: "aborted", last: seq.last };
    let error: unknown = undefined;
    let delivered = false;
    try {
      for await (const batch of opts.open(seq.last, opts.signal)) {
        const fresh = seq.accept(batch);
        if (fresh.length === 0) continue;
        if (!delivered && attempt > 0) opts.onConnected?.();
        delivered = true;
        attempt = 0;
        if (fresh.some(opts.isTerminal)) terminal = true;
        opts.onEvents(fresh);
      }
    } catch (e) {
      error = e;
    }
    if (opts.signal.aborted) return { kind: "aborted", last: seq.last };
    if (error === undefined && terminal) return { kind: "terminal", last: seq.last };
    if (error === undefined && opts.confirmTerminal) {
      try {
        if (await opts.confirmTerminal()) return { kind: "terminal", last: seq.last };
      } catch (e) {
        error = e;
      }
    }
    if (error !== undefined && opts.classify(error) === "fatal") {
      return { kind: "failed", last: seq.last, error };
    }
    // Broken, or ended before the terminal event (e.g. a proxy's stream timeout): resume.
    attempt += 1;
    const delay = backoff(attempt);
    opts.onRetry?.(attempt, delay, error);
    await sleep(delay, opts.signal);
  }
}
