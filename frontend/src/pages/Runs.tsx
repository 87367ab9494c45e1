// Runs list: filtered by state and tool, paginated with page tokens, states kept live by
// WatchRun streams of the visible non-terminal runs (a few at a time: browsers allow six
// HTTP/1.1 connections per origin), re-listed when a watched run ends and when the window
// regains focus.
import { useEffect, useMemo, useRef, useState } from "react";
import { api } from "../api/client";
import { isStreamRetryable } from "../api/errors";
import { DataTable, Empty, Loading, PageTitle, ProblemView, StateBadge } from "../components/common";
import { ToolSelect } from "../components/ToolSelect";
import { RunState } from "../gen/flnet/api/common/v1/lifecycle_pb";
import type { Run } from "../gen/flnet/api/control/v1/run_pb";
import { watchEvents } from "../lib/events";
import { ACTIVE_STATES, ALL_STATES, formatTime, isoTime, isTerminal, stateName } from "../lib/format";
import { lastSegment, runPath, toolName, toolPath, toolVersionLabel } from "../lib/names";
import { useAsync, useDocumentTitle, useOnFocus } from "../lib/useAsync";
import { Link, setQuery, useLocation } from "../router";

const PAGE_SIZE = 25;
/** Concurrent WatchRun streams of the list (leaves connections for other calls). */
const MAX_WATCHES = 3;

export function stateFilter(value: string): RunState[] {
  if (value === "ACTIVE") return [...ACTIVE_STATES];
  const s = ALL_STATES.find((x) => stateName(x) === value);
  return s === undefined ? [] : [s];
}

export function RunsPage() {
  useDocumentTitle("Runs");
  const { search } = useLocation();
  const state = search.get("state") ?? "";
  const tool = search.get("tool") ?? "";
  const page = search.get("page") ?? "";
  const [history, setHistory] = useState<string[]>([]);

  const tools = useAsync(async (signal) => (await api().tools.listTools({ parent: api().parent(), pageSize: 1000 }, { signal })).tools, []);
  const list = useAsync(
    async (signal) =>
      api().runs.listRuns(
        {
          parent: api().parent(),
          pageSize: PAGE_SIZE,
          pageToken: page,
          states: stateFilter(state),
          tool: tool ? toolName(api().tenant(), tool) : "",
        },
        { signal },
      ),
    [state, tool, page],
  );
  useOnFocus(list.reload);

  const runs = list.data?.runs ?? [];
  useLiveStates(runs, (name, patch) => {
    list.setData((old) => {
      if (!old) return old!;
      return { ...old, runs: old.runs.map((r) => (r.name === name ? { ...r, ...patch } : r)) };
    });
  }, list.reload);

  const onFilter = (params: Record<string, string>) => {
    setHistory([]);
    setQuery({ ...params, page: undefined });
  };

  return (
    <section className="page" aria-labelledby="runs-title">
      <div className="page-head">
        <PageTitle>
          <span id="runs-title">Runs</span>
        </PageTitle>
        <Link to="/runs/new" className="button">
          Submit a run
        </Link>
      </div>
      <form className="filters" role="search" aria-label="Filter runs" onSubmit={(e) => e.preventDefault()}>
        <div className="tool">
          <label htmlFor="runs-state">State</label>
          <select id="runs-state" value={state} onChange={(e) => onFilter({ state: e.target.value, tool })}>
            <option value="">All states</option>
            <option value="ACTIVE">Active (not finished)</option>
            {ALL_STATES.map((s) => (
              <option key={s} value={stateName(s)}>
                {stateName(s)}
              </option>
            ))}
          </select>
        </div>
        <ToolSelect id="runs-tool" value={tool} tools={tools.data} noneLabel="All tools" onChange={(t) => onFilter({ state, tool: t })} keepUnlisted />
        <button type="button" className="secondary" onClick={list.reload}>
          Refresh
        </button>
      </form>
      {list.loading && !list.data && <Loading label="Loading runs…" />}
      {list.error !== undefined && <ProblemView error={list.error} what="list runs" onRetry={list.reload} />}
      {list.data && runs.length === 0 && (
        <Empty>
          {state || tool ? "No runs match these filters." : "No runs yet."} <Link to="/runs/new">Submit a run</Link>
        </Empty>
      )}
      {runs.length > 0 && <RunsTable runs={runs} caption="Runs, newest first" />}
      {(page || list.data?.nextPageToken) && (
        <nav className="pagination" aria-label="Pagination">
          <button
            type="button"
            className="secondary"
            disabled={!page}
            onClick={() => {
              const prev = history[history.length - 1] ?? "";
              setHistory(history.slice(0, -1));
              setQuery({ page: prev || undefined });
            }}
          >
            Previous page
          </button>
          {/* A deep link to a later page does not know its number. */}
          {!(page && history.length === 0) && <span className="muted">Page {history.length + 1}</span>}
          <button
            type="button"
            className="secondary"
            disabled={!list.data?.nextPageToken}
            onClick={() => {
              setHistory([...history, page]);
              setQuery({ page: list.data?.nextPageToken });
            }}
          >
            Next page
          </button>
        </nav>
      )}
    </section>
  );
}

export function RunsTable({ runs, caption, showTool = true }: { runs: Run[]; caption: string; showTool?: boolean }) {
  return (
    <DataTable
      caption={caption}
      className="runs"
      columns={["Run", ...(showTool ? ["Tool"] : []), "State", "Progress", "Created", "Creator"]}
    >
      {runs.map((r) => (
        <tr key={r.name}>
          <td>
            <Link to={runPath(r.name)} className="mono">
              {lastSegment(r.name)}
            </Link>
            {r.devSession && <span className="tag">dev session</span>}
            {r.devSessionRun && <span className="tag">test</span>}
            {r.reproduceOf && <span className="tag">reproduction</span>}
          </td>
          {showTool && (
            <td>
              <Link to={toolPath(r.toolVersion)}>{toolVersionLabel(r.toolVersion)}</Link>
            </td>
          )}
          <td>
            <StateBadge state={r.state} />
          </td>
          <td>
            {r.progress && !isTerminal(r.state) ? (
              <span title={r.progress.message}>{Math.round(r.progress.fraction * 100)}%</span>
            ) : r.state === RunState.FINISHED ? (
              "100%"
            ) : (
              "—"
            )}
          </td>
          <td>
            <time dateTime={isoTime(r.createTime)}>{formatTime(r.createTime)}</time>
          </td>
          <td className="mono small">{r.creator}</td>
        </tr>
      ))}
    </DataTable>
  );
}

/** Watches the state of up to `max` non-terminal runs of a list (newest first). */
export function useLiveStates(
  runs: Run[],
  onChange: (name: string, patch: Partial<Run>) => void,
  onEnded: () => void,
  max = MAX_WATCHES,
): void {
  const cb = useRef({ onChange, onEnded });
  cb.current = { onChange, onEnded };
  const targets = useMemo(
    () =>
      runs
        .filter((r) => !isTerminal(r.state))
        .slice(0, max)
        .map((r) => ({ name: r.name, after: Number(r.lastSequence) })),
    // Re-target when the set of non-terminal runs changes, not on every state patch.
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [runs.filter((r) => !isTerminal(r.state)).map((r) => r.name).join(","), max],
  );
  useEffect(() => {
    const ctl = new AbortController();
    let endTimer: ReturnType<typeof setTimeout> | undefined;
    for (const t of targets) {
      void watchEvents({
        signal: ctl.signal,
        after: t.after,
        open: async function* (after, signal) {
          for await (const res of api().runs.watchRun({ name: t.name, afterSequence: BigInt(after) }, { signal })) yield res.events;
        },
        onEvents: (events) => {
          for (const e of events) {
            if (e.event.case === "stateChange") cb.current.onChange(t.name, { state: e.event.value.toState });
            else if (e.event.case === "progress") cb.current.onChange(t.name, { progress: e.event.value });
          }
        },
        isTerminal: (e) => e.event.case === "stateChange" && isTerminal(e.event.value.toState),
        classify: (e) => (isStreamRetryable(e) ? "retry" : "fatal"),
        confirmTerminal: async () => {
          const r = await api().runs.getRun({ name: t.name }, { signal: ctl.signal });
          return !!r.run && isTerminal(r.run.state);
        },
      }).then((end) => {
        if (end.kind === "terminal" && !ctl.signal.aborted) {
          // Let other runs' watches take the freed slot; filters may drop the run.
          clearTimeout(endTimer);
          endTimer = setTimeout(() => cb.current.onEnded(), 300);
        }
      });
    }
    return () => {
      clearTimeout(endTimer);
      ctl.abort();
    };
  }, [targets]);
}
