// Run page: state, progress, error, status timeline, live logs and metrics, outputs and
// provenance, with cancel, reproduce and RO-Crate export.
import { Code } from "@connectrpc/connect";
import { lazy, Suspense, useEffect, useMemo, useState, useSyncExternalStore, type FormEvent, type ReactNode } from "react";
import { api } from "../api/client";
import { toProblem } from "../api/errors";
import { uuid4 } from "../auth/pkce";
import { DataTable, Dialog, Digest, Facts, Loading, NotFoundView, PageTitle, ProblemView, ProgressBar, StateBadge } from "../components/common";
import { LogView } from "../components/LogView";
import { OutputsView } from "../components/Outputs";
import { RunState } from "../gen/flnet/api/common/v1/lifecycle_pb";
import type { Run } from "../gen/flnet/api/control/v1/run_pb";
import { downloadChunks, saveBytes } from "../lib/download";
import {
  elapsed,
  formatBytes,
  formatDuration,
  formatTime,
  isoTime,
  isTerminal,
  kindName,
  reasonName,
  stateName,
} from "../lib/format";
import { lastSegment, runPath, toolPath, toolVersionLabel } from "../lib/names";
import { RunStream } from "../lib/runStream";
import { useDocumentTitle } from "../lib/useAsync";
import { Link, navigate } from "../router";

// uPlot is loaded with the first run page, not with the app.
const MetricCharts = lazy(() => import("../components/MetricCharts").then((m) => ({ default: m.MetricCharts })));

declare global {
  interface Window {
    /** Sequences of the run page's events, in the order received, without duplicates. */
    __flnetRunEvents?: number[];
  }
}

/** A RunStream for a run, started on mount and stopped on unmount. */
export function useRunStream(name: string, exposeSequences = false): RunStream {
  const stream = useMemo(() => {
    if (exposeSequences) window.__flnetRunEvents = [];
    return new RunStream(name, api(), exposeSequences ? (seqs) => window.__flnetRunEvents?.push(...seqs) : undefined);
  }, [name, exposeSequences]);
  useEffect(() => {
    stream.start();
    return () => stream.stop();
  }, [stream]);
  useSyncExternalStore(stream.subscribe, stream.getVersion);
  return stream;
}

export function RunPage({ runId }: { runId: string }) {
  const name = `tenants/${api().tenant()}/runs/${runId}`;
  const stream = useRunStream(name, true);
  useDocumentTitle(`Run ${runId}`);
  const run = stream.run;
  if (!run) {
    if (stream.loadError !== undefined) {
      if (toProblem(stream.loadError).code === Code.NotFound) {
        return <NotFoundView title="Run not found" message={`There is no run ${runId} in your tenant.`} />;
      }
      return (
        <section className="page">
          <PageTitle>Run {runId}</PageTitle>
          <ProblemView error={stream.loadError} what="show this run" />
        </section>
      );
    }
    return (
      <section className="page">
        <PageTitle>Run {runId}</PageTitle>
        <Loading label="Loading run…" />
      </section>
    );
  }
  return (
    <section className="page run-page" aria-labelledby="run-title">
      <RunHeader stream={stream} run={run} />
      <RunBody stream={stream} run={run} full />
    </section>
  );
}

function ConnectionNote({ stream }: { stream: RunStream }) {
  const c = stream.connection;
  switch (c.kind) {
    case "connecting":
      return <span className="conn">Connecting…</span>;
    case "live":
      return <span className="conn live">Live</span>;
    case "reconnecting":
      return <span className="conn warn">Reconnecting (attempt {c.attempt})…</span>;
    case "ended":
      return <span className="conn">Complete</span>;
    case "failed":
      return <span className="conn warn">Updates stopped: {toProblem(c.error).message}</span>;
  }
}

function RunHeader({ stream, run }: { stream: RunStream; run: Run }) {
  const id = lastSegment(run.name);
  const [cancelOpen, setCancelOpen] = useState(false);
  return (
    <div className="run-head">
      <div className="page-head">
        <PageTitle>
          <span id="run-title">Run {id}</span>
        </PageTitle>
        <div className="actions">
          {!isTerminal(run.state) && (
            <button type="button" className="danger" onClick={() => setCancelOpen(true)} disabled={!!stream.cancellation}>
              {stream.cancellation ? "Cancelling…" : "Cancel run"}
            </button>
          )}
          <ReproduceButton run={run} />
          <ExportButton run={run} />
        </div>
      </div>
      <p className="run-summary">
        <span className="state-line" role="status" data-testid="run-state">
          State <StateBadge state={run.state} />
        </span>
        <span>
          Tool <Link to={toolPath(run.toolVersion)}>{toolVersionLabel(run.toolVersion)}</Link>
        </span>
        <span className="events-count" data-testid="events-count">
          {stream.sequences.length} events
        </span>
        <ConnectionNote stream={stream} />
      </p>
      {(run.devSession || run.devSessionRun || run.reproduceOf) && (
        <p className="run-links">
          {run.devSession && (
            <>
              Development session: <Link to={`/dev-sessions/${encodeURIComponent(id)}`}>open the session</Link>
            </>
          )}
          {run.devSessionRun && (
            <>
              Test run of development session{" "}
              <Link to={`/dev-sessions/${encodeURIComponent(lastSegment(run.devSessionRun))}`}>{lastSegment(run.devSessionRun)}</Link>
            </>
          )}
          {run.reproduceOf && (
            <>
              {" "}
              Reproduces <Link to={runPath(run.reproduceOf)}>{lastSegment(run.reproduceOf)}</Link>
            </>
          )}
        </p>
      )}
      <CancelDialog open={cancelOpen} onClose={() => setCancelOpen(false)} run={run} stream={stream} />
    </div>
  );
}

/** Sections shared by the run page and the development session's inline test run view. */
export function RunBody({ stream, run, full, headingLevel = 2 }: { stream: RunStream; run: Run; full: boolean; headingLevel?: 2 | 3 }) {
  const H = headingLevel === 2 ? "h2" : "h3";
  const prefix = lastSegment(run.name);
  const outputs = [...stream.outputs.values()];
  return (
    <>
      {stream.progress && (
        <section aria-label="Progress" className="card">
          <ProgressBar
            value={run.state === RunState.FINISHED ? 1 : stream.progress.fraction}
            label="Run progress"
            text={stream.progress.message}
          />
        </section>
      )}
      {run.state === RunState.ERROR && run.error && <ErrorPanel run={run} H={H} />}
      {stream.cancellation && (
        <section className="card" aria-labelledby={`${prefix}-cancel`}>
          <H id={`${prefix}-cancel`}>Cancellation</H>
          <Facts
            items={[
              ["Requested by", stream.cancellation.requestedBy || "—"],
              ["Reason", stream.cancellation.reason || "—"],
              ["Requested", formatTime(stream.cancellation.requestTime)],
              ["Teardown completed", formatTime(stream.cancellation.completeTime)],
              ["Teardown took", formatDuration(stream.cancellation.teardown)],
            ]}
          />
        </section>
      )}
      <section className="card" aria-labelledby={`${prefix}-timeline`}>
        <H id={`${prefix}-timeline`}>Status timeline</H>
        <Timeline stream={stream} />
      </section>
      <section className="card" aria-labelledby={`${prefix}-logs`}>
        <H id={`${prefix}-logs`}>Logs</H>
        {run.telemetryDropTime && <p className="muted">Logs, metrics and progress were removed by retention on {formatTime(run.telemetryDropTime)}.</p>}
        <LogView stream={stream} idPrefix={`${prefix}-logs`} />
      </section>
      <section className="card" aria-labelledby={`${prefix}-metrics`}>
        <H id={`${prefix}-metrics`}>Metrics</H>
        <Suspense fallback={<Loading label="Loading charts…" />}>
          <MetricCharts stream={stream} />
        </Suspense>
      </section>
      <section className="card" aria-labelledby={`${prefix}-outputs`}>
        <H id={`${prefix}-outputs`}>Outputs</H>
        <OutputsView outputs={outputs} runId={prefix} headingLevel={headingLevel === 2 ? 3 : 4} />
      </section>
      {full && <Provenance stream={stream} run={run} />}
    </>
  );
}

function ErrorPanel({ run, H }: { run: Run; H: "h2" | "h3" }) {
  const e = run.error!;
  const id = `${lastSegment(run.name)}-error`;
  return (
    <section className="card error-panel" aria-labelledby={id}>
      <H id={id}>Error</H>
      <p className="error-message">{e.message || "The run failed."}</p>
      <Facts
        items={[
          ["Reason", <code key="r">{reasonName(e.reason)}</code>],
          ["Fault", <span key="k">{kindName(e.kind)}</span>],
          ["Retry safe", e.retrySafe ? "Yes — submitting the same run again may succeed" : "No — change the configuration, inputs or tool first"],
          ["Phase", stateName(e.phase)],
          ...(e.errorType ? ([["Exception", <code key="t">{e.errorType}</code>]] as [string, ReactNode][]) : []),
        ]}
      />
      {Object.keys(e.context).length > 0 && (
        <details>
          <summary>Runtime context</summary>
          <Facts items={Object.entries(e.context).map(([k, v]) => [k, <code key={k}>{v}</code>])} />
        </details>
      )}
      {e.traceback && (
        <details open>
          <summary>Traceback</summary>
          <pre className="traceback" tabIndex={0}>
            {e.traceback}
          </pre>
        </details>
      )}
      {e.lastOutputLines.length > 0 && (
        <details>
          <summary>Last output lines</summary>
          <pre className="traceback" tabIndex={0}>
            {e.lastOutputLines.join("\n")}
          </pre>
        </details>
      )}
    </section>
  );
}

function Timeline({ stream }: { stream: RunStream }) {
  const items = stream.timeline;
  if (items.length === 0) return <p className="empty">No state changes received yet.</p>;
  return (
    <ol className="timeline">
      {items.map(({ sequence, change }) => (
        <li key={sequence}>
          <StateBadge state={change.toState} />
          <time dateTime={isoTime(change.time)}>{formatTime(change.time)}</time>
          {change.actor && <span className="muted">by {change.actor}</span>}
          {change.message && <span className="timeline-message">{change.message}</span>}
          {change.error && <span className="timeline-message">{reasonName(change.error.reason)}</span>}
        </li>
      ))}
    </ol>
  );
}

function CancelDialog({ open, onClose, run, stream }: { open: boolean; onClose: () => void; run: Run; stream: RunStream }) {
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [touched, setTouched] = useState(false);
  const id = lastSegment(run.name);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setTouched(true);
    if (!reason.trim()) return;
    setBusy(true);
    setError(undefined);
    try {
      const res = await api().runs.cancelRun({ name: run.name, reason: reason.trim() });
      if (res.run) stream.setRun(res.run);
      onClose();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const missing = touched && !reason.trim();
  return (
    <Dialog open={open} title={`Cancel run ${id}`} onClose={onClose}>
      <form onSubmit={(e) => void submit(e)} noValidate>
        <p>The tool is asked to stop; after its grace period it is stopped. The reason is recorded in the run's provenance.</p>
        <div className={`field${missing ? " invalid" : ""}`}>
          <label htmlFor="cancel-reason">Reason</label>
          <textarea
            id="cancel-reason"
            value={reason}
            onChange={(e) => setReason(e.target.value)}
            rows={3}
            required
            aria-invalid={missing || undefined}
            aria-describedby={missing ? "cancel-reason-error" : undefined}
          />
          {missing && (
            <p id="cancel-reason-error" className="field-error">
              Give a reason for cancelling.
            </p>
          )}
        </div>
        {error !== undefined && <ProblemView error={error} what="cancel this run" />}
        <div className="actions">
          <button type="submit" className="danger" disabled={busy}>
            {busy ? "Cancelling…" : "Confirm cancel"}
          </button>
          <button type="button" className="secondary" onClick={onClose}>
            Keep running
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function ReproduceButton({ run }: { run: Run }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [requestId] = useState(uuid4);
  const go = async () => {
    setBusy(true);
    setError(undefined);
    try {
      const res = await api().runs.reproduceRun({ name: run.name, requestId });
      if (res.run) navigate(runPath(res.run.name));
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  return (
    <>
      <button type="button" className="secondary" onClick={() => void go()} disabled={busy}>
        {busy ? "Reproducing…" : "Reproduce run"}
      </button>
      {error !== undefined && (
        <div className="action-error">
          <ProblemView error={error} what="reproduce this run" />
        </div>
      )}
    </>
  );
}

function ExportButton({ run }: { run: Run }) {
  const [state, setState] = useState<
    { kind: "idle" } | { kind: "busy"; received: number } | { kind: "done"; name: string; url: string; size: number } | { kind: "error"; error: unknown }
  >({ kind: "idle" });
  useEffect(() => () => (state.kind === "done" ? URL.revokeObjectURL(state.url) : undefined), [state]);
  const go = async () => {
    setState({ kind: "busy", received: 0 });
    let filename = `${lastSegment(run.name)}.crate.zip`;
    try {
      const ctl = new AbortController();
      // ExportRun has no offset: a broken export starts again from the beginning.
      const result = await downloadChunks({
        signal: ctl.signal,
        onProgress: (received) => setState({ kind: "busy", received }),
        open: async function* (offset, signal) {
          if (offset > 0) throw new Error("the export stream broke; export again");
          for await (const res of api().runs.exportRun({ name: run.name }, { signal })) {
            if (res.filename) filename = res.filename;
            if (res.data.length) yield { data: res.data };
          }
        },
      });
      const url = saveBytes(result.chunks as BlobPart[], filename, "application/zip");
      setState({ kind: "done", name: filename, url, size: result.size });
    } catch (e) {
      setState({ kind: "error", error: e });
    }
  };
  return (
    <>
      <button type="button" className="secondary" onClick={() => void go()} disabled={state.kind === "busy"}>
        {state.kind === "busy" ? "Exporting…" : "Export RO-Crate"}
      </button>
      <span role="status" className="export-status">
        {state.kind === "busy" && `Exporting… ${formatBytes(state.received)}`}
        {state.kind === "done" && (
          <>
            Exported {state.name} ({formatBytes(state.size)}).{" "}
            <a href={state.url} download={state.name}>
              Save {state.name} again
            </a>
          </>
        )}
      </span>
      {state.kind === "error" && (
        <div className="action-error">
          <ProblemView error={state.error} what="export this run" />
        </div>
      )}
    </>
  );
}

function Provenance({ stream, run }: { stream: RunStream; run: Run }) {
  const outputs = [...stream.outputs.values()];
  return (
    <section className="card" aria-labelledby="provenance-title">
      <h2 id="provenance-title">Provenance</h2>
      <Facts
        items={[
          ["Run", <code key="n">{run.name}</code>],
          ["Tool version", <Link key="t" to={toolPath(run.toolVersion)}>{run.toolVersion}</Link>],
          ["Image or source digest", <Digest key="d" value={run.artifactDigest} />],
          ["Configuration sha256", <Digest key="c" value={run.configSha256} />],
          ["Submitted by", run.creator || "—"],
          ["Request id", run.requestId ? <code key="q">{run.requestId}</code> : "—"],
          ["Created", formatTime(run.createTime)],
          ["Started", formatTime(run.startTime)],
          ["Ended", formatTime(run.endTime)],
          ["Duration", run.startTime && run.endTime ? elapsed(run.startTime, run.endTime) : "—"],
          ["Deadline", formatTime(run.deadlineTime)],
          ["Last event sequence", String(run.lastSequence)],
        ]}
      />
      <h3>Configuration</h3>
      <pre className="config-json" tabIndex={0}>
        {JSON.stringify(run.config ?? {}, null, 2)}
      </pre>
      {stream.configChanges.length > 0 && (
        <>
          <h3>Configuration changes</h3>
          <ol className="timeline">
            {stream.configChanges.map(({ sequence, change }) => (
              <li key={sequence}>
                <span>event {sequence}</span> <span className="muted">by {change.actor || "—"}</span> <Digest value={change.configSha256} />
              </li>
            ))}
          </ol>
        </>
      )}
      <h3>Inputs</h3>
      {run.inputs.length === 0 ? (
        <p className="empty">No inputs.</p>
      ) : (
        <DataTable caption="Inputs" columns={["Name", "Artifact", "Size", "sha256"]}>
          {run.inputs.map((i) => (
            <tr key={i.name}>
              <td>{i.name}</td>
              <td className="mono small">{lastSegment(i.artifact)}</td>
              <td>{formatBytes(i.sizeBytes)}</td>
              <td>
                <Digest value={i.sha256} />
              </td>
            </tr>
          ))}
        </DataTable>
      )}
      <h3>Outputs</h3>
      {outputs.length === 0 ? (
        <p className="empty">No outputs.</p>
      ) : (
        <DataTable caption="Outputs with checksums" columns={["Name", "Media type", "Size", "sha256"]}>
          {outputs.map((o) => (
            <tr key={o.name}>
              <td>{o.outputName || o.filename}</td>
              <td>
                <code>{o.mediaType}</code>
              </td>
              <td>{formatBytes(o.sizeBytes)}</td>
              <td>
                <Digest value={o.sha256} />
              </td>
            </tr>
          ))}
        </DataTable>
      )}
      <h3>Timeline</h3>
      <p>
        {stream.timeline.length} state changes, listed under <a href={`#${lastSegment(run.name)}-timeline`}>Status timeline</a>; created{" "}
        {formatTime(run.createTime)} by {run.creator || "—"}.
      </p>
    </section>
  );
}

