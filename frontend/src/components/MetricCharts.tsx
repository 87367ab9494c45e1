// One live uPlot chart per metric name (value by step), redrawn at most once per animation
// frame as the RunStream delivers points.
import { useEffect, useRef, useSyncExternalStore } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { MetricSeries, RunStream } from "../lib/runStream";

const COLORS = ["#1f5fbf", "#b0420f", "#1d7a46", "#7a3db8", "#9a6700", "#0f6f7a"];

export function MetricCharts({ stream }: { stream: RunStream }) {
  useSyncExternalStore(stream.subscribe, stream.getVersion);
  const series = [...stream.metrics.values()];
  if (series.length === 0) return <p className="empty">No metrics reported yet.</p>;
  return (
    <div className="charts">
      {series.map((s, i) => (
        <MetricChart key={s.name} series={s} color={COLORS[i % COLORS.length]!} version={stream.version} />
      ))}
    </div>
  );
}

function fmt(v: number | undefined): string {
  if (v === undefined) return "—";
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : v.toPrecision(4).replace(/\.?0+$/, "");
}

function MetricChart({ series, color, version }: { series: MetricSeries; color: string; version: number }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = Math.max(240, el.clientWidth);
    const u = new uPlot(
      {
        width,
        height: 200,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: false } },
        axes: [
          { label: "step", stroke: "#444", grid: { stroke: "#e4e6ea" }, ticks: { stroke: "#c9ccd1" } },
          { stroke: "#444", grid: { stroke: "#e4e6ea" }, ticks: { stroke: "#c9ccd1" }, size: 60 },
        ],
        series: [{ label: "step" }, { label: series.name, stroke: color, width: 2, points: { show: false } }],
      },
      [series.steps, series.values],
      el,
    );
    plot.current = u;
    const ro = new ResizeObserver(() => {
      const w = Math.max(240, el.clientWidth);
      if (Math.abs(w - u.width) > 2) u.setSize({ width: w, height: 200 });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [series.name]);

  useEffect(() => {
    plot.current?.setData([series.steps, series.values]);
  }, [version, series]);

  const n = series.values.length;
  const last = series.values[n - 1];
  const lastStep = series.steps[n - 1];
  const unit = series.unit ? ` ${series.unit}` : "";
  const min = n ? Math.min(...series.values.slice(-10000)) : undefined;
  const max = n ? Math.max(...series.values.slice(-10000)) : undefined;
  const summary = `${series.name}: ${n} points; latest ${fmt(last)}${unit} at step ${lastStep ?? "—"}`;
  return (
    <figure className="chart">
      <figcaption>
        <strong>{series.name}</strong>
        {series.unit && <span className="unit"> ({series.unit})</span>}{" "}
        <span className="chart-latest">
          latest {fmt(last)}
          {unit} at step {lastStep ?? "—"} · min {fmt(min)} · max {fmt(max)}
        </span>
      </figcaption>
      <div ref={box} className="chart-canvas" role="img" aria-label={summary} />
    </figure>
  );
}
