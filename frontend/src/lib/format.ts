// Display formats: sizes, times, durations, state and enum names.
import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { ErrorKind, ErrorReason, RunState } from "../gen/flnet/api/common/v1/lifecycle_pb";
import { LogSeverity } from "../gen/flnet/api/common/v1/telemetry_pb";

export function formatBytes(n: number | bigint): string {
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let x = v / 1024;
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${x < 10 ? x.toFixed(1) : Math.round(x)} ${units[i]}`;
}

export function tsMillis(t: Timestamp | undefined): number | undefined {
  if (!t) return undefined;
  return Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
}

export function formatTime(t: Timestamp | undefined): string {
  const ms = tsMillis(t);
  if (ms === undefined) return "—";
  return new Date(ms).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

export function isoTime(t: Timestamp | undefined): string | undefined {
  const ms = tsMillis(t);
  return ms === undefined ? undefined : new Date(ms).toISOString();
}

export function formatClock(t: Timestamp | undefined): string {
  const ms = tsMillis(t);
  if (ms === undefined) return "";
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export function formatSeconds(s: number): string {
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${m % 60} min`;
}

export function formatDuration(d: Duration | undefined): string {
  if (!d) return "—";
  return formatSeconds(Number(d.seconds) + d.nanos / 1e9);
}

export function elapsed(a: Timestamp | undefined, b: Timestamp | undefined): string {
  const x = tsMillis(a);
  const y = tsMillis(b);
  return x === undefined || y === undefined ? "—" : formatSeconds(Math.max(0, (y - x) / 1000));
}

/** "FINISHED" for RunState.FINISHED. */
export function stateName(s: RunState): string {
  return RunState[s] ?? String(s);
}

export const TERMINAL_STATES: readonly RunState[] = [RunState.FINISHED, RunState.ERROR, RunState.CANCELLED];
export const ACTIVE_STATES: readonly RunState[] = [RunState.PENDING, RunState.INITIALIZED, RunState.STARTED, RunState.RUNNING];
export const ALL_STATES: readonly RunState[] = [...ACTIVE_STATES, ...TERMINAL_STATES];

export function isTerminal(s: RunState): boolean {
  return TERMINAL_STATES.includes(s);
}

export function reasonName(r: ErrorReason): string {
  return ErrorReason[r] ?? String(r);
}

export function kindName(k: ErrorKind): string {
  return ErrorKind[k] ?? String(k);
}

export function severityName(s: LogSeverity): string {
  return LogSeverity[s] ?? "UNSPECIFIED";
}

export function shortDigest(d: string, n = 12): string {
  const hex = d.replace(/^sha256:/, "");
  return hex.length > n ? `${d.startsWith("sha256:") ? "sha256:" : ""}${hex.slice(0, n)}…` : d;
}
