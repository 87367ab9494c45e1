// Virtualized log view: only the rows in view (plus a few) are in the DOM, so a run with
// 100k lines scrolls as fast as one with ten. New lines arrive through the RunStream, which
// batches them per animation frame; "Follow" keeps the view at the newest line.
import { useEffect, useLayoutEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import { LogSeverity } from "../gen/flnet/api/common/v1/telemetry_pb";
import { visibleRange } from "../lib/logModel";
import type { RunStream } from "../lib/runStream";

const ROW_HEIGHT = 20;
const SEVERITIES: [number, string][] = [
  [0, "All"],
  [LogSeverity.DEBUG, "DEBUG"],
  [LogSeverity.INFO, "INFO and above"],
  [LogSeverity.WARNING, "WARNING and above"],
  [LogSeverity.ERROR, "ERROR and above"],
  [LogSeverity.CRITICAL, "CRITICAL"],
];

function sevLabel(s: number): string {
  return LogSeverity[s] && s !== 0 ? LogSeverity[s]! : "";
}

function clock(ms: number | undefined): string {
  if (ms === undefined) return "";
  const d = new Date(ms);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export function LogView({ stream, idPrefix = "logs" }: { stream: RunStream; idPrefix?: string }) {
  useSyncExternalStore(stream.subscribe, stream.getVersion);
  const model = stream.logs;
  const [minSeverity, setMinSeverity] = useState(0);
  const [query, setQuery] = useState("");
  const [follow, setFollow] = useState(true);
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(400);
  const viewport = useRef<HTMLDivElement>(null);
  const programmatic = useRef(false);

  // Filters apply after a short pause in typing.
  const [filterVersion, setFilterVersion] = useState(0);
  useEffect(() => {
    const t = setTimeout(() => {
      model.setFilter({ minSeverity, query });
      setFilterVersion((n) => n + 1);
    }, query ? 150 : 0);
    return () => clearTimeout(t);
  }, [model, minSeverity, query]);

  useLayoutEffect(() => {
    const el = viewport.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setHeight(el.clientHeight));
    ro.observe(el);
    setHeight(el.clientHeight);
    return () => ro.disconnect();
  }, []);

  const rowCount = model.rowCount;
  useLayoutEffect(() => {
    const el = viewport.current;
    if (!follow || !el) return;
    const bottom = Math.max(0, rowCount * ROW_HEIGHT - el.clientHeight);
    if (Math.abs(el.scrollTop - bottom) > 1) {
      programmatic.current = true;
      el.scrollTop = bottom;
      setScrollTop(el.scrollTop);
    }
  }, [rowCount, follow, height]);

  const frame = useRef(0);
  const onScroll = () => {
    const el = viewport.current;
    if (!el) return;
    if (programmatic.current) {
      programmatic.current = false;
    } else if (follow && el.scrollTop + el.clientHeight < el.scrollHeight - ROW_HEIGHT * 2) {
      setFollow(false); // the reader scrolled up: stop following
    }
    cancelAnimationFrame(frame.current);
    frame.current = requestAnimationFrame(() => setScrollTop(el.scrollTop));
  };

  const { start, end } = visibleRange(scrollTop, height, ROW_HEIGHT, rowCount);
  const rows = useMemo(() => {
    const out = [];
    for (let i = start; i < end; i++) {
      const r = model.row(i);
      if (!r) break;
      out.push(
        <div key={i} className={`log-row sev-${r.entry.severity}${r.line > 0 ? " cont" : ""}`} style={{ transform: `translateY(${i * ROW_HEIGHT}px)` }}>
          <span className="log-time">{r.line === 0 ? clock(r.entry.time) : ""}</span>
          <span className="log-sev">{r.line === 0 ? sevLabel(r.entry.severity) : ""}</span>
          <span className="log-msg">{r.text}</span>
        </div>,
      );
    }
    return out;
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [start, end, model, stream.version, filterVersion]);

  const total = model.entries.length;
  const filtered = model.filter.minSeverity > 0 || model.filter.query.trim() !== "";
  return (
    <div className="logview">
      <div className="toolbar" role="group" aria-label="Log filters">
        <div className="tool">
          <label htmlFor={`${idPrefix}-severity`}>Severity</label>
          <select id={`${idPrefix}-severity`} value={minSeverity} onChange={(e) => setMinSeverity(Number(e.target.value))}>
            {SEVERITIES.map(([v, l]) => (
              <option key={v} value={v}>
                {l}
              </option>
            ))}
          </select>
        </div>
        <div className="tool grow">
          <label htmlFor={`${idPrefix}-search`}>Search logs</label>
          <input id={`${idPrefix}-search`} type="search" value={query} onChange={(e) => setQuery(e.target.value)} autoComplete="off" />
        </div>
        <div className="tool checkbox">
          <input
            id={`${idPrefix}-follow`}
            type="checkbox"
            checked={follow}
            onChange={(e) => {
              setFollow(e.target.checked);
            }}
          />
          <label htmlFor={`${idPrefix}-follow`}>Follow</label>
        </div>
      </div>
      <p className="log-count" id={`${idPrefix}-count`}>
        {filtered ? `${model.matchedCount.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} lines` : `${total.toLocaleString("en-US")} lines`}
      </p>
      <div
        ref={viewport}
        className="log-viewport"
        // Few lines: a short box; many: the stylesheet's fixed height (virtualized).
        style={rowCount < 18 ? { height: `${Math.max(4, rowCount) * ROW_HEIGHT + 8}px` } : undefined}
        onScroll={onScroll}
        tabIndex={0}
        role="region"
        aria-label="Log lines"
        aria-describedby={`${idPrefix}-count`}
      >
        <div className="log-spacer" style={{ height: `${rowCount * ROW_HEIGHT}px` }}>
          {rows}
        </div>
        {total === 0 && <p className="empty log-empty">No log lines yet.</p>}
        {total > 0 && rowCount === 0 && <p className="empty log-empty">No line matches the filters.</p>}
      </div>
    </div>
  );
}
