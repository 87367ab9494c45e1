import { describe, expect, it } from "vitest";
import { EventSequencer, watchEvents, type Sequenced } from "../lib/events";

interface Ev extends Sequenced {
  sequence: bigint;
  terminal?: boolean;
}

const ev = (n: number, terminal = false): Ev => ({ sequence: BigInt(n), terminal });
const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/** A fake WatchRun over a stored history: each call serves events after `after`, in batches,
 * optionally breaking after some batches or re-sending events before `after`. */
function fakeServer(history: Ev[], script: { breakAfterBatches?: number; replay?: number; endEarly?: boolean }[]) {
  const calls: number[] = [];
  const open = (after: number, _signal: AbortSignal): AsyncIterable<readonly Ev[]> => {
    const plan = script[calls.length] ?? {};
    calls.push(after);
    return (async function* () {
      const from = Math.max(0, after - (plan.replay ?? 0));
      const pending = history.filter((e) => Number(e.sequence) > from);
      let batches = 0;
      for (let i = 0; i < pending.length; i += 3) {
        if (plan.breakAfterBatches !== undefined && batches === plan.breakAfterBatches) throw new Error("stream broke");
        if (plan.endEarly && batches === 1) return;
        yield pending.slice(i, i + 3);
        batches++;
      }
    })();
  };
  return { open, calls };
}

const noSleep = async () => undefined;

describe("EventSequencer", () => {
  it("drops what was delivered and keeps the order", () => {
    const s = new EventSequencer<Ev>();
    expect(s.accept([ev(1), ev(2)]).map((e) => Number(e.sequence))).toEqual([1, 2]);
    expect(s.accept([ev(2), ev(3), ev(1), ev(4)]).map((e) => Number(e.sequence))).toEqual([3, 4]);
    expect(s.last).toBe(4);
  });

  it("accepts gaps left by retention", () => {
    const s = new EventSequencer<Ev>(2);
    expect(s.accept([ev(2), ev(7), ev(9)]).map((e) => Number(e.sequence))).toEqual([7, 9]);
  });
});

describe("watchEvents", () => {
  const history = [...range(1, 19).map((n) => ev(n)), ev(20, true)];

  it("resumes after a broken stream from the last sequence, without gap or duplicate", async () => {
    const server = fakeServer(history, [{ breakAfterBatches: 2 }, { breakAfterBatches: 1, replay: 2 }, { replay: 2 }]);
    const seen: number[] = [];
    const retries: number[] = [];
    const end = await watchEvents<Ev>({
      open: server.open,
      onEvents: (es) => seen.push(...es.map((e) => Number(e.sequence))),
      isTerminal: (e) => !!e.terminal,
      classify: () => "retry",
      onRetry: (attempt) => retries.push(attempt),
      signal: new AbortController().signal,
      sleep: noSleep,
    });
    expect(end).toEqual({ kind: "terminal", last: 20 });
    expect(seen).toEqual(range(1, 20));
    expect(server.calls).toEqual([0, 6, 7]);
    expect(retries).toEqual([1, 1]);
  });

  it("starts after a given sequence", async () => {
    const server = fakeServer(history, []);
    const seen: number[] = [];
    await watchEvents<Ev>({
      open: server.open,
      onEvents: (es) => seen.push(...es.map((e) => Number(e.sequence))),
      isTerminal: (e) => !!e.terminal,
      classify: () => "retry",
      signal: new AbortController().signal,
      after: 15,
      sleep: noSleep,
    });
    expect(seen).toEqual(range(16, 20));
    expect(server.calls).toEqual([15]);
  });

  it("stops on a fatal error", async () => {
    const server = fakeServer(history, [{ breakAfterBatches: 1 }]);
    const end = await watchEvents<Ev>({
      open: server.open,
      onEvents: () => undefined,
      isTerminal: (e) => !!e.terminal,
      classify: () => "fatal",
      signal: new AbortController().signal,
      sleep: noSleep,
    });
    expect(end.kind).toBe("failed");
    expect(end.last).toBe(3);
    expect(server.calls).toEqual([0]);
  });

  it("asks whether the run is over when a stream ends without its terminal event", async () => {
    const server = fakeServer(history, [{ endEarly: true }]);
    const seen: number[] = [];
    let asked = 0;
    const end = await watchEvents<Ev>({
      open: server.open,
      onEvents: (es) => seen.push(...es.map((e) => Number(e.sequence))),
      isTerminal: (e) => !!e.terminal,
      classify: () => "retry",
      confirmTerminal: async () => {
        asked++;
        return false;
      },
      signal: new AbortController().signal,
      sleep: noSleep,
    });
    expect(asked).toBe(1);
    expect(server.calls).toEqual([0, 3]);
    expect(seen).toEqual(range(1, 20));
    expect(end.kind).toBe("terminal");
  });

  it("ends when aborted", async () => {
    const ctl = new AbortController();
    const server = fakeServer(history, [{ breakAfterBatches: 1 }]);
    const end = await watchEvents<Ev>({
      open: server.open,
      onEvents: () => undefined,
      isTerminal: (e) => !!e.terminal,
      classify: () => "retry",
      onRetry: () => ctl.abort(),
      signal: ctl.signal,
      sleep: noSleep,
    });
    expect(end).toEqual({ kind: "aborted", last: 3 });
  });

  it("completes at once for a terminal run with nothing new", async () => {
    const server = fakeServer(history, []);
    const end = await watchEvents<Ev>({
      open: server.open,
      onEvents: () => undefined,
      isTerminal: (e) => !!e.terminal,
      classify: () => "retry",
      signal: new AbortController().signal,
      after: 20,
      terminal: true,
      sleep: noSleep,
    });
    expect(end).toEqual({ kind: "terminal", last: 20 });
  });
});
