// The live model of one run: the run resource, kept fresh by WatchRun (history first, then
// live events, resumed after a broken stream from the last sequence seen), and what the run
// page derives from its events: status timeline, logs, metrics, progress, outputs, config
// changes. Listeners are told at most once per animation frame, so a flood of events costs
// one render per frame.
import { Code, ConnectError } from "@connectrpc/connect";
import { isStreamRetryable } from "../api/errors";
import type { Api } from "../api/client";
import { RunState, type StateChange } from "../gen/flnet/api/common/v1/lifecycle_pb";
import type { Progress } from "../gen/flnet/api/common/v1/telemetry_pb";
import type { Artifact } from "../gen/flnet/api/control/v1/artifact_pb";
import type { Cancellation, ConfigChange, Run, RunEvent } from "../gen/flnet/api/control/v1/run_pb";
import { seqOf, watchEvents } from "./events";
import { isTerminal, tsMillis } from "./format";
import { LogModel, type LogEntry } from "./logModel";

export interface MetricSeries {
  name: string;
  unit: string;
  steps: number[];
  values: number[];
}

export interface TimelineEntry {
  sequence: number;
  change: StateChange;
}

export type Connection =
  | { kind: "connecting" }
  | { kind: "live" }
  | { kind: "reconnecting"; attempt: number; error: string }
  | { kind: "ended" }
  | { kind: "failed"; error: unknown };

export class RunStream {
  run: Run | undefined;
  loadError: unknown = undefined;
  connection: Connection = { kind: "connecting" };
  /** Sequences of the events received, in order, without duplicates. */
  readonly sequences: number[] = [];
  readonly timeline: TimelineEntry[] = [];
  readonly logs = new LogModel();
  readonly metrics = new Map<string, MetricSeries>();
  readonly outputs = new Map<string, Artifact>();
  readonly configChanges: { sequence: number; change: ConfigChange }[] = [];
  cancellation: Cancellation | undefined;
  progress: Progress | undefined;
  /** Bumped on every change (for memoisation). */
  version = 0;
  private listeners = new Set<() => void>();
  private ctl = new AbortController();
  private scheduled = false;
  private started = false;

  constructor(
    readonly name: string,
    private readonly api: Api,
    /** Also told of every accepted sequence (the run page mirrors them on window). */
    private readonly onSequences?: (seqs: number[]) => void,
  ) {}

  subscribe = (l: () => void): (() => void) => {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  };

  getVersion = (): number => this.version;

  private changed(): void {
    this.version += 1;
    if (this.scheduled) return;
    this.scheduled = true;
    const flush = () => {
      this.scheduled = false;
      for (const l of [...this.listeners]) l();
    };
    // Animation frames pause in hidden tabs; a timer keeps the model flowing there.
    if (document.visibilityState === "visible") requestAnimationFrame(flush);
    else setTimeout(flush, 250);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    void this.run_();
  }

  stop(): void {
    this.ctl.abort();
  }

  /** Reads the run again (after a terminal state, a cancel, ...). */
  async refresh(): Promise<void> {
    try {
      const res = await this.api.runs.getRun({ name: this.name }, { signal: this.ctl.signal });
      if (res.run) this.setRun(res.run);
    } catch {
      // The stream keeps the state; a failed refresh only delays outputs and error details.
    }
  }

  setRun(run: Run): void {
    this.run = run;
    for (const o of run.outputs) this.outputs.set(o.outputName || o.name, o);
    if (run.progress && (!this.progress || (tsMillis(run.progress.time) ?? 0) >= (tsMillis(this.progress.time) ?? 0))) {
      this.progress = run.progress;
    }
    if (run.cancellation) this.cancellation = run.cancellation;
    this.changed();
  }

  private async run_(): Promise<void> {
    const signal = this.ctl.signal;
    try {
      const res = await this.api.runs.getRun({ name: this.name }, { signal });
      if (!res.run) throw new ConnectError("empty response", Code.Internal);
      this.setRun(res.run);
    } catch (e) {
      if (signal.aborted) return;
      this.loadError = e;
      this.connection = { kind: "failed", error: e };
      this.changed();
      return;
    }
    const end = await watchEvents<RunEvent>({
      signal,
      after: 0,
      open: (after, sig) => this.open(after, sig),
      onEvents: (events) => this.apply(events),
      isTerminal: (e) => e.event.case === "stateChange" && isTerminal(e.event.value.toState),
      classify: (e) => (isStreamRetryable(e) ? "retry" : "fatal"),
      confirmTerminal: async () => {
        const r = await this.api.runs.getRun({ name: this.name }, { signal });
        if (r.run) this.setRun(r.run);
        return !!r.run && isTerminal(r.run.state);
      },
      onRetry: (attempt, _delay, error) => {
        this.connection = {
          kind: "reconnecting",
          attempt,
          error: error instanceof Error ? error.message : "the stream ended early",
        };
        this.changed();
      },
      onConnected: () => {
        this.connection = { kind: "live" };
        this.changed();
      },
    });
    if (end.kind === "aborted") return;
    if (end.kind === "failed") {
      this.connection = { kind: "failed", error: end.error };
    } else {
      this.connection = { kind: "ended" };
      await this.refresh();
    }
    this.changed();
  }

  private async *open(after: number, signal: AbortSignal): AsyncIterable<readonly RunEvent[]> {
    const stream = this.api.runs.watchRun({ name: this.name, afterSequence: BigInt(after) }, { signal });
    let first = true;
    for await (const res of stream) {
      if (first) {
        first = false;
        if (this.connection.kind !== "live") {
          this.connection = { kind: "live" };
          this.changed();
        }
      }
      yield res.events;
    }
  }

  private apply(events: RunEvent[]): void {
    const logs: LogEntry[] = [];
    const seqs: number[] = [];
    let terminal = false;
    for (const e of events) {
      const sequence = seqOf(e);
      seqs.push(sequence);
      this.sequences.push(sequence);
      const ev = e.event;
      switch (ev.case) {
        case "stateChange": {
          this.timeline.push({ sequence, change: ev.value });
          // History replays older transitions: states only move forward (enum order).
          if (this.run && ev.value.toState > this.run.state && !isTerminal(this.run.state)) {
            this.run = { ...this.run, state: ev.value.toState };
            if (ev.value.error) this.run.error = ev.value.error;
            if (ev.value.toState === RunState.RUNNING && !this.run.startTime && ev.value.time) this.run.startTime = ev.value.time;
            if (isTerminal(ev.value.toState) && !this.run.endTime && ev.value.time) this.run.endTime = ev.value.time;
          }
          if (isTerminal(ev.value.toState)) terminal = true;
          break;
        }
        case "log":
          logs.push({
            sequence,
            time: tsMillis(ev.value.time),
            severity: ev.value.severity,
            message: ev.value.message,
            logger: ev.value.logger,
            caller: ev.value.caller,
            traceback: ev.value.traceback,
          });
          break;
        case "metric": {
          const m = ev.value;
          let s = this.metrics.get(m.name);
          if (!s) {
            s = { name: m.name, unit: m.unit, steps: [], values: [] };
            this.metrics.set(m.name, s);
          }
          const step = Number(m.step);
          const last = s.steps[s.steps.length - 1];
          if (last === undefined || step > last) {
            s.steps.push(step);
            s.values.push(m.value);
          } else {
            // Out of order or repeated step: keep x sorted (uPlot requires it).
            const i = s.steps.findIndex((x) => x >= step);
            if (s.steps[i] === step) s.values[i] = m.value;
            else {
              s.steps.splice(i, 0, step);
              s.values.splice(i, 0, m.value);
            }
          }
          break;
        }
        case "progress":
          this.progress = ev.value;
          break;
        case "output":
          this.outputs.set(ev.value.outputName || ev.value.name, ev.value);
          break;
        case "configChange":
          this.configChanges.push({ sequence, change: ev.value });
          if (this.run && ev.value.config) this.run = { ...this.run, config: ev.value.config, configSha256: ev.value.configSha256 };
          break;
        case "cancellation":
          this.cancellation = ev.value;
          break;
        default:
          break;
      }
    }
    if (logs.length) this.logs.append(logs);
    if (this.run) {
      const last = BigInt(seqs[seqs.length - 1] ?? 0);
      if (last > this.run.lastSequence) this.run = { ...this.run, lastSequence: last };
    }
    this.onSequences?.(seqs);
    this.changed();
    if (terminal) void this.refresh();
  }

  /** The state the UI shows. */
  get state(): RunState {
    return this.run?.state ?? RunState.UNSPECIFIED;
  }
}
