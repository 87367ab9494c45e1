"""What the CLI prints: machine-readable JSON (`-o json`) or human text (rich)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import fleet_pb2 as fp
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.client import CallError
from flnet.structs import struct_to_dict

console = Console(highlight=False)
errors = Console(highlight=False, stderr=True, soft_wrap=True)  # errors are never re-wrapped
STATE_STYLE = {"FINISHED": "green", "ERROR": "red", "CANCELLED": "yellow"}


def to_json(value: Any) -> Any:
    """`value` as JSON values. Whole numbers print as integers: a configuration's numbers are
    doubles on the wire (google.protobuf.Struct), and `epochs: 8.0` is not what was set."""
    if isinstance(value, Message):
        return to_json(json_format.MessageToDict(value))
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_json(value), indent=None, sort_keys=True) + "\n")
    sys.stdout.flush()


def error(problem: CallError | str, *, json_output: bool) -> None:
    """A command's failure, on stderr: one JSON object (`-o json`), or a line with the
    status code and message followed by each field at fault."""
    call = problem if isinstance(problem, CallError) else None
    if json_output:
        body = call.to_json() if call else {"message": problem}
        sys.stderr.write(json.dumps({"error": body}, sort_keys=True) + "\n")
        return
    if call is None:
        errors.print(f"[red]error[/red] {escape(str(problem))}")
        return
    errors.print(f"[red]error[/red] {call.code}: {escape(call.message)}")
    for field, description in call.violations:
        errors.print(f"  {escape(field)}: {escape(description)}")


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def when(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def state(value: int) -> str:
    name = lifecycle.state_name(value)
    style = STATE_STYLE.get(name, "cyan")
    return f"[{style}]{name}[/{style}]"


def tools_table(tools: Iterable[tp.Tool]) -> None:
    table = Table("tool", "kind", "versions", "description")
    for t in tools:
        table.add_row(short(t.name), t.kind, ", ".join(t.versions), t.description[:60])
    console.print(table)


def tool_detail(tool: tp.Tool, versions: Iterable[tp.ToolVersion]) -> None:
    console.print(f"[bold]{tool.name}[/bold]  {tool.kind}\n{tool.description}")
    table = Table("version", "artifact", "inputs", "outputs", "contract sha256")
    for v in versions:
        artifact = v.image.digest if v.HasField("image") else "sha256:" + v.source.sha256
        table.add_row(
            v.version,
            artifact,
            ", ".join(i.name for i in v.inputs),
            ", ".join(o.name for o in v.outputs),
            v.contract_sha256[:16],
        )
    console.print(table)


def runs_table(runs: Iterable[rp.Run]) -> None:
    # Ids are never cut (a run is named by them); the other columns give way.
    table = Table(Column("run", no_wrap=True, min_width=20), "kind", "tool version", "state",
                  "created", "ended")  # fmt: skip
    for r in runs:
        tv = r.tool_version.split("/tools/", 1)[-1].replace("/versions/", "@")
        table.add_row(
            short(r.name), run_kind(r), tv, state(r.state), when(r.create_time), when(r.end_time)
        )
    console.print(table)


def orchestrators_table(found: Iterable[fp.Orchestrator]) -> None:
    table = Table("orchestrator", "state", "backend", "runs", "cpu (millicores)", "memory",
                  "labels", "heard")  # fmt: skip
    for o in found:
        table.add_row(
            o.name.removeprefix("orchestrators/"),
            fp.OrchestratorState.Name(o.state).removeprefix("ORCHESTRATOR_STATE_").lower(),
            o.backend,
            f"{o.load.runs}/{o.capacity.runs}",
            f"{o.load.cpu_millis}/{o.capacity.cpu_millis}",
            f"{o.load.memory_bytes >> 20}/{o.capacity.memory_bytes >> 20} MiB",
            ",".join(f"{k}={v}" if v else k for k, v in sorted(o.labels.items())),
            when(o.heartbeat_time),
        )
    console.print(table)


def quota_detail(q: fp.TenantQuota) -> None:
    def limit(value: int) -> str:
        return str(value) if value else "unlimited"

    console.print(f"[bold]{q.tenant}[/bold]  ({q.queued_runs} runs waiting to be placed)")
    console.print(f"  runs           {q.usage.runs} of {limit(q.max_runs)}")
    console.print(f"  cpu millicores {q.usage.cpu_millis} of {limit(q.max_cpu_millis)}")
    console.print(f"  memory bytes   {q.usage.memory_bytes} of {limit(q.max_memory_bytes)}")
    if q.HasField("update_time"):
        console.print(f"  set            {when(q.update_time)} by {q.updated_by}")


def run_kind(run: rp.Run) -> str:
    """ "dev session", "dev test" (a run a development session executed) or "run"."""
    if run.dev_session:
        return "dev session"
    return "dev test" if run.dev_session_run else "run"


def metric_row(point: tm.MetricPoint) -> dict[str, Any]:
    return {
        "name": point.name,
        "step": point.step,
        "value": point.value,
        "unit": point.unit,
        "time": point.time.ToJsonString() if point.HasField("time") else None,
    }


def metrics_csv(points: Iterable[tm.MetricPoint]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["name", "step", "value", "unit", "time"])
    for point in points:
        row = metric_row(point)
        writer.writerow([row["name"], row["step"], repr(row["value"]), row["unit"], row["time"]])


def metrics_table(points: Iterable[tm.MetricPoint]) -> None:
    table = Table("metric", "step", "value", "unit", "time")
    for point in points:
        table.add_row(point.name, str(point.step), f"{point.value:.6g}", point.unit,
                      when(point.time))  # fmt: skip
    console.print(table)


def outputs_table(outputs: Iterable[ap.Artifact]) -> None:
    table = Table("output", "media type", "bytes", "sha256", "artifact")
    for o in outputs:
        table.add_row(o.output_name, o.media_type, str(o.size_bytes), o.sha256, short(o.name))
    console.print(table)


def reproduction_table(outputs: Iterable[Mapping[str, Any]]) -> None:
    table = Table("output", "original sha256", "reproduced sha256", "match")
    for o in outputs:
        mark = "[green]yes[/green]" if o["match"] else "[red]no[/red]"
        table.add_row(o["output"], o["original"][:16], o["reproduced"][:16], mark)
    console.print(table)


def gc_summary(report: Mapping[str, Any]) -> None:
    """What `flnet gc` removed (or would remove), as Report.to_dict gives it."""
    t = report["telemetry"]
    rows = [
        ("input artifacts no run references", f"{report['inputs']['count']} artifacts"),
        ("telemetry of runs ended long ago", f"{t['events']} events of {t['runs']} runs"),
        ("resumable uploads (expired or stray)", f"{report['uploads']['count']} uploads"),
        ("blobs no artifact records", f"{report['orphanBlobs']['count']} blobs"),
        ("writes never finished", f"{report['unfinishedWrites']['count']} writes"),
    ]
    freed = [report[k]["bytes"] for k in ("inputs", "telemetry", "uploads", "orphanBlobs")]
    freed.append(report["unfinishedWrites"]["bytes"])
    table = Table("", "would remove" if report["dryRun"] else "removed", "bytes freed")
    for (what, count), size in zip(rows, freed, strict=True):
        table.add_row(what, count, str(size))
    console.print(table)
    for error in report["errors"]:
        errors.print(f"[red]error[/red] {error}")


def run_detail(run: rp.Run) -> None:
    console.print(f"[bold]{run.name}[/bold]  {state(run.state)}")
    if run.dev_session:
        console.print("  kind           development session")
    elif run.dev_session_run:
        console.print(f"  kind           development test run of {run.dev_session_run}")
    console.print(f"  tool version   {run.tool_version}")
    console.print(f"  artifact       {run.artifact_digest}")
    console.print(f"  config sha256  {run.config_sha256}")
    console.print(f"  config         {json.dumps(struct_to_dict(run.config), sort_keys=True)}")
    for i in run.inputs:
        console.print(f"  input {i.name:<8} {i.artifact}  sha256 {i.sha256}")
    console.print(f"  created        {when(run.create_time)} by {run.creator}")
    if run.HasField("queue"):
        console.print(
            f"  waiting        #{run.queue.position} in its tenant's queue: {run.queue.reason}"
        )
    if run.orchestrator:
        console.print(f"  placed on      {run.orchestrator.removeprefix('orchestrators/')}")
    console.print(f"  ended          {when(run.end_time)}")
    if run.reproduce_of:
        console.print(f"  reproduces     {run.reproduce_of}")
    if run.HasField("telemetry_drop_time"):
        console.print(f"  telemetry      dropped by retention {when(run.telemetry_drop_time)}")
    if run.HasField("cancellation"):
        c = run.cancellation
        console.print(f"  cancelled by   {c.requested_by}: {c.reason}")
    if run.HasField("error"):
        error_detail(run)
    if run.outputs:
        outputs_table(run.outputs)


def error_detail(run: rp.Run) -> None:
    e = run.error
    console.print(
        f"  [red]error {lifecycle.reason_name(e.reason)}[/red] "
        f"(kind {_kind(e.kind)}, "
        f"retry {'safe' if e.retry_safe else 'not safe'}): {e.message}"
    )
    if e.traceback:
        console.print(e.traceback.rstrip(), style="dim", markup=False)
    for line in e.last_output_lines[-10:]:
        console.print(f"  | {line}", style="dim", markup=False)


def _kind(kind: int) -> str:
    return lc.ErrorKind.Name(lc.ErrorKind.ValueType(kind)).removeprefix("ERROR_KIND_")


SEVERITY_STYLE = {
    tm.LOG_SEVERITY_DEBUG: "dim",
    tm.LOG_SEVERITY_WARNING: "yellow",
    tm.LOG_SEVERITY_ERROR: "red",
    tm.LOG_SEVERITY_CRITICAL: "bold red",
}


class WatchView:
    """Live rendering of a run's events: state changes, logs and outputs as lines; progress
    (with its message) and the latest metrics in a live bar; a table of the metrics when the
    run ends. Where the output is no terminal (a pipe, a file), progress and metrics are
    lines too, as they come."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("PENDING", total=1.0, metrics="")
        self.metrics: dict[str, tm.MetricPoint] = {}
        self.points: dict[str, int] = {}
        self.state = "PENDING"
        self.message = ""  # the latest progress message
        self.lines = not console.is_terminal

    def __enter__(self) -> WatchView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
        if self.metrics:
            table = Table("metric", "last value", "unit", "step", "points")
            for name, m in self.metrics.items():
                table.add_row(name, f"{m.value:.6g}", m.unit, str(m.step), str(self.points[name]))
            console.print(table)

    def _describe(self) -> None:
        self.progress.update(self.task, description=f"{self.state} {self.message}".rstrip())

    def show(self, event: rp.RunEvent) -> None:
        which = event.WhichOneof("event")
        if which == "state_change":
            sc = event.state_change
            self.state = lifecycle.state_name(sc.to_state)
            self._describe()
            line = f"{state(sc.to_state)} {sc.message}".rstrip()
            if sc.HasField("error"):
                line += f" [red]{lifecycle.reason_name(sc.error.reason)}: {sc.error.message}[/red]"
            console.print(line)
        elif which == "log":
            rec = event.log
            style = SEVERITY_STYLE.get(rec.severity, "")
            sev = tm.LogSeverity.Name(rec.severity).removeprefix("LOG_SEVERITY_")
            console.print(f"{sev:<7} {rec.message}", style=style, markup=False)
            if rec.traceback:
                console.print(rec.traceback.rstrip(), style="dim", markup=False)
        elif which == "metric":
            m = event.metric
            self.metrics[m.name] = m
            self.points[m.name] = self.points.get(m.name, 0) + 1
            latest = "  ".join(f"{k}={v.value:.4g}" for k, v in self.metrics.items())
            self.progress.update(self.task, metrics=f"{latest}  (step {m.step})")
            if self.lines:
                console.print(f"metric  {m.name}={m.value:.6g}{m.unit} step {m.step}", markup=False)
        elif which == "progress":
            p = event.progress
            self.message = p.message
            self.progress.update(self.task, completed=p.fraction)
            self._describe()
            if self.lines:
                console.print(f"progress {p.fraction:.0%} {p.message}".rstrip(), markup=False)
        elif which == "output":
            o = event.output
            console.print(f"[green]output[/green] {o.output_name} {o.size_bytes} B {o.sha256}")
        elif which == "cancellation":
            c = event.cancellation
            console.print(f"[yellow]cancel requested[/yellow] by {c.requested_by}: {c.reason}")
        elif which == "config_change":
            console.print(f"config changed: {struct_to_dict(event.config_change.config)}")
