// Development sessions: the tenant's connected `flnet dev connect` sessions (runs with
// dev_session set that are not terminal), one session's configuration edited live through
// the generated form (UpdateDevConfig), and test runs started (StartDevTest) and watched
// inline.
import { Code } from "@connectrpc/connect";
import { useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import { api } from "../api/client";
import { toProblem } from "../api/errors";
import { ConfigForm } from "../components/ConfigForm";
import { DataTable, Digest, Empty, Loading, NotFoundView, PageTitle, ProblemView, StateBadge } from "../components/common";
import type { Run } from "../gen/flnet/api/control/v1/run_pb";
import { getToolVersion } from "../lib/cache";
import { ACTIVE_STATES, formatTime, isTerminal } from "../lib/format";
import { lastSegment, runPath, toolPath, toolVersionLabel } from "../lib/names";
import {
  buildFormModel,
  changedKeys,
  initialValues,
  serverErrors,
  toConfig,
  type FieldErrors,
  type FieldValue,
  type FormValues,
  type JsonObject,
} from "../lib/schemaForm";
import { useAsync, useDocumentTitle, useOnFocus } from "../lib/useAsync";
import { Link } from "../router";
import { RunBody, useRunStream } from "./Run";
import { RunsTable, useLiveStates } from "./Runs";

/** Lists runs page by page (at most `maxPages`) and keeps those `keep` accepts. */
async function listRunsWhere(
  request: { states?: number[]; tool?: string },
  keep: (r: Run) => boolean,
  signal: AbortSignal,
  maxPages = 5,
): Promise<Run[]> {
  const out: Run[] = [];
  let pageToken = "";
  for (let i = 0; i < maxPages; i++) {
    const res = await api().runs.listRuns(
      { parent: api().parent(), pageSize: 200, pageToken, states: request.states ?? [], tool: request.tool ?? "" },
      { signal },
    );
    out.push(...res.runs.filter(keep));
    pageToken = res.nextPageToken;
    if (!pageToken) break;
  }
  return out;
}

export function DevSessionsPage() {
  useDocumentTitle("Development sessions");
  // ListRuns has no dev_session filter: list the active runs and keep the sessions.
  const list = useAsync((signal) => listRunsWhere({ states: [...ACTIVE_STATES] }, (r) => r.devSession, signal), []);
  useOnFocus(list.reload);
  const sessions = list.data ?? [];
  useLiveStates(
    sessions,
    (name, patch) => list.setData((old) => (old ?? []).map((r) => (r.name === name ? { ...r, ...patch } : r))),
    list.reload,
  );
  return (
    <section className="page" aria-labelledby="dev-title">
      <div className="page-head">
        <PageTitle>
          <span id="dev-title">Development sessions</span>
        </PageTitle>
        <button type="button" className="secondary" onClick={list.reload}>
          Refresh
        </button>
      </div>
      <p className="lead">
        Sessions started with <code>flnet dev connect &lt;tool dir&gt;</code> run the tool from source on the developer's machine. Change their
        configuration and start test runs here.
      </p>
      {list.loading && !list.data && <Loading label="Loading development sessions…" />}
      {list.error !== undefined && <ProblemView error={list.error} what="list development sessions" onRetry={list.reload} />}
      {list.data && sessions.length === 0 && <Empty>No development session is connected.</Empty>}
      {sessions.length > 0 && (
        <DataTable caption="Connected development sessions" columns={["Session", "Tool", "State", "Started", "Developer"]}>
          {sessions.map((s) => (
            <tr key={s.name}>
              <td>
                <Link to={`/dev-sessions/${encodeURIComponent(lastSegment(s.name))}`} className="mono">
                  {lastSegment(s.name)}
                </Link>
              </td>
              <td>
                <Link to={toolPath(s.toolVersion)}>{toolVersionLabel(s.toolVersion)}</Link>
              </td>
              <td>
                <StateBadge state={s.state} />
              </td>
              <td>{formatTime(s.createTime)}</td>
              <td className="mono small">{s.creator}</td>
            </tr>
          ))}
        </DataTable>
      )}
    </section>
  );
}

export function DevSessionPage({ runId }: { runId: string }) {
  useDocumentTitle(`Development session ${runId}`);
  const name = `tenants/${api().tenant()}/runs/${runId}`;
  const stream = useRunStream(name);
  const run = stream.run;
  const [activeTest, setActiveTest] = useState<string | null>(null);
  const tests = useAsync(
    async (signal) => {
      if (!run) return [] as Run[];
      return listRunsWhere({ tool: run.toolVersion }, (r) => r.devSessionRun === name, signal, 2);
    },
    [run?.toolVersion, name],
  );
  const testList = tests.data ?? [];
  // One watch for the list: the page already holds the session's and the shown test run's
  // streams, and browsers open at most six HTTP/1.1 connections per origin.
  useLiveStates(
    testList,
    (n, patch) => tests.setData((old) => (old ?? []).map((r) => (r.name === n ? { ...r, ...patch } : r))),
    () => undefined,
    1,
  );
  const shownTest = activeTest ?? testList[0]?.name ?? null;

  if (!run) {
    if (stream.loadError !== undefined) {
      if (toProblem(stream.loadError).code === Code.NotFound)
        return <NotFoundView title="Session not found" message={`There is no development session ${runId} in your tenant.`} />;
      return (
        <section className="page">
          <PageTitle>Development session {runId}</PageTitle>
          <ProblemView error={stream.loadError} what="show this session" />
        </section>
      );
    }
    return (
      <section className="page">
        <PageTitle>Development session {runId}</PageTitle>
        <Loading label="Loading session…" />
      </section>
    );
  }
  if (!run.devSession) {
    return (
      <section className="page">
        <PageTitle>Development session {runId}</PageTitle>
        <p className="problem" role="alert">
          Run {runId} is not a development session. <Link to={runPath(run.name)}>Open its run page</Link>.
        </p>
      </section>
    );
  }
  const ended = isTerminal(run.state);
  return (
    <section className="page" aria-labelledby="session-title">
      <nav aria-label="Breadcrumb" className="breadcrumb">
        <ol>
          <li>
            <Link to="/dev-sessions">Development sessions</Link>
          </li>
          <li>
            <span aria-current="page">{runId}</span>
          </li>
        </ol>
      </nav>
      <PageTitle>
        <span id="session-title">Development session {runId}</span>
      </PageTitle>
      <p className="run-summary">
        <span className="state-line" role="status" data-testid="run-state">
          State <StateBadge state={run.state} />
        </span>
        <span>
          Tool <Link to={toolPath(run.toolVersion)}>{toolVersionLabel(run.toolVersion)}</Link>
        </span>
        <span>Developer {run.creator}</span>
        <Link to={runPath(run.name)}>Session run page</Link>
      </p>
      {ended && (
        <p className="problem" role="alert">
          This session has ended: its engine is no longer connected.
        </p>
      )}
      <DevConfigEditor run={run} disabled={ended} />
      <section className="card" aria-labelledby="tests-title">
        <div className="page-head">
          <h2 id="tests-title">Test runs</h2>
          <StartTestButton
            session={run}
            disabled={ended}
            onStarted={(t) => {
              tests.setData((old) => [t, ...(old ?? [])]);
              setActiveTest(t.name);
            }}
          />
        </div>
        {tests.loading && !tests.data && <Loading label="Loading test runs…" />}
        {tests.error !== undefined && <ProblemView error={tests.error} what="list test runs" onRetry={tests.reload} />}
        {tests.data && testList.length === 0 && <Empty>No test run yet.</Empty>}
        {testList.length > 0 && <RunsTable runs={testList} caption="Test runs of this session" showTool={false} />}
      </section>
      {shownTest && <InlineTestRun key={shownTest} name={shownTest} />}
    </section>
  );
}

function InlineTestRun({ name }: { name: string }) {
  const stream = useRunStream(name);
  const run = stream.run;
  const id = lastSegment(name);
  return (
    <section className="card inline-run" aria-labelledby="inline-run-title">
      <div className="page-head">
        <h2 id="inline-run-title">Test run {id}</h2>
        <Link to={runPath(name)}>Open run page</Link>
      </div>
      {!run && stream.loadError === undefined && <Loading label="Loading test run…" />}
      {stream.loadError !== undefined && <ProblemView error={stream.loadError} what="show the test run" />}
      {run && (
        <>
          <p className="run-summary">
            <span className="state-line" role="status">
              State <StateBadge state={run.state} />
            </span>
            <span className="events-count">{stream.sequences.length} events</span>
          </p>
          <RunBody stream={stream} run={run} full={false} headingLevel={3} />
        </>
      )}
    </section>
  );
}

function StartTestButton({ session, disabled, onStarted }: { session: Run; disabled: boolean; onStarted: (r: Run) => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const start = async () => {
    setBusy(true);
    setError(undefined);
    try {
      const res = await api().runs.startDevTest({ name: session.name });
      if (res.run) onStarted(res.run);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="actions">
      <button type="button" onClick={() => void start()} disabled={busy || disabled}>
        {busy ? "Starting…" : "Start test run"}
      </button>
      {error !== undefined && <ProblemView error={error} what="start a test run" />}
    </div>
  );
}

function DevConfigEditor({ run, disabled }: { run: Run; disabled: boolean }) {
  const version = useAsync((signal) => getToolVersion(run.toolVersion, signal), [run.toolVersion]);
  const model = useMemo(() => buildFormModel(version.data?.configSchema ?? null), [version.data]);
  const serverConfig = (run.config ?? {}) as JsonObject;
  const serverKey = run.configSha256 || JSON.stringify(serverConfig);
  const [values, setValues] = useState<FormValues>({});
  const [dirty, setDirty] = useState(false);
  const [errors, setErrors] = useState<FieldErrors>({});
  const [summary, setSummary] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ ok: true; sha: string } | { ok: false; error: unknown } | null>(null);
  const [outside, setOutside] = useState(false);
  const lastKey = useRef<string | null>(null);

  // Follow the session's configuration while the form is untouched; otherwise say it moved.
  useEffect(() => {
    if (!version.data) return;
    if (lastKey.current === null || !dirty) {
      setValues(initialValues(model, serverConfig));
      setOutside(false);
    } else if (lastKey.current !== serverKey) {
      setOutside(true);
    }
    lastKey.current = serverKey;
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [serverKey, model, version.data]);

  const change = (key: string, v: FieldValue) => {
    setDirty(true);
    setValues((old) => ({ ...old, [key]: v }));
    setErrors((old) => {
      if (!old[key]) return old;
      const { [key]: _drop, ...rest } = old;
      return rest;
    });
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setResult(null);
    const r = toConfig(model, values);
    setErrors(r.errors);
    const messages = Object.entries(r.errors).flatMap(([k, ms]) => ms.map((m) => `${k}: ${m}`));
    setSummary(messages);
    if (!r.ok) return;
    const patch = changedKeys(r.config, serverConfig);
    setBusy(true);
    try {
      const res = await api().runs.updateDevConfig({ name: run.name, config: patch });
      setDirty(false);
      setOutside(false);
      setResult({ ok: true, sha: res.run?.configSha256 ?? "" });
      if (res.run) setValues(initialValues(model, (res.run.config ?? {}) as JsonObject));
    } catch (err) {
      const p = toProblem(err);
      if (p.code === Code.InvalidArgument && p.violations.length) {
        const { errors: fe, rest } = serverErrors(model, p.violations, ["config"]);
        const { "": unplaced, ...placed } = fe;
        setErrors(placed);
        setSummary([
          ...Object.entries(placed).flatMap(([k, ms]) => ms.map((m) => `${k}: ${m}`)),
          ...(unplaced ?? []),
          ...rest.map((v) => `${v.field}: ${v.description}`),
        ]);
      } else {
        setResult({ ok: false, error: err });
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="card" aria-labelledby="devcfg-title">
      <h2 id="devcfg-title">Configuration</h2>
      <p className="small muted">
        Current configuration sha256 <Digest value={run.configSha256} />
      </p>
      {version.loading && <Loading label="Loading the configuration contract…" />}
      {version.error !== undefined && <ProblemView error={version.error} what="load the tool version" onRetry={version.reload} />}
      {version.data && (
        <form onSubmit={(e) => void submit(e)} noValidate aria-labelledby="devcfg-title">
          {outside && (
            <p className="notice" role="status">
              The session's configuration was changed elsewhere.{" "}
              <button
                type="button"
                className="small secondary"
                onClick={() => {
                  setValues(initialValues(model, serverConfig));
                  setDirty(false);
                  setOutside(false);
                }}
              >
                Load the current configuration
              </button>
            </p>
          )}
          {summary.length > 0 && (
            <div role="alert" className="problem error-summary">
              <p className="problem-title">The configuration was not applied:</p>
              <ul>
                {summary.map((m, i) => (
                  <li key={i}>{m}</li>
                ))}
              </ul>
            </div>
          )}
          <ConfigForm model={model} values={values} errors={errors} onChange={change} idPrefix="devcfg" disabled={disabled || busy} />
          <div className="actions">
            <button type="submit" disabled={disabled || busy}>
              {busy ? "Applying…" : "Apply configuration"}
            </button>
            <span role="status">
              {result?.ok && !dirty && (
                <span className="ok">
                  Configuration applied{result.sha ? ` (sha256 ${result.sha.slice(0, 12)}…)` : ""}
                </span>
              )}
            </span>
          </div>
          {result && !result.ok && <ProblemView error={result.error} what="apply the configuration" />}
        </form>
      )}
    </section>
  );
}
