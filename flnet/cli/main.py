"""`flnet`: the command line of the platform. Every command takes `-o json` for
machine-readable output and finds the running stack through <data-dir>/endpoints.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.cli import render
from flnet.cli.contract import checked
from flnet.cli.images import add_image_commands
from flnet.cli.login import access_token, add_login_command
from flnet.cli.stack import (
    ComponentFailed,
    Stack,
    StackNotRunning,
    read_endpoints,
    run_stack,
    running_stack,
)
from flnet.client import CallError, FlnetClient, compare_outputs
from flnet.client.filenames import output_filename
from flnet.datadir import default_data_dir
from flnet.oauth import LoginError
from flnet.orchestrator.backends import BACKENDS, DEFAULT_BACKEND
from flnet.toolspec import ToolSpecError

Handler = Callable[[argparse.Namespace], Awaitable[int]]


def parse_value(text: str) -> Any:
    """JSON where it parses (numbers, booleans, lists), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} must be KEY=VALUE, not {pair!r}")
        result[key] = value
    return result


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if getattr(args, "config_file", None):
        config.update(json.loads(Path(args.config_file).read_text()))
    for key, value in parse_pairs(getattr(args, "config", None) or [], "--config").items():
        config[key] = parse_value(value)
    return config


def client(args: argparse.Namespace) -> FlnetClient:
    """The control plane's client: $FLNET_TOKEN as the bearer token when set (scripts),
    else the token `flnet login` cached (renewed as needed)."""
    address = args.address or os.environ.get("FLNET_ADDRESS")
    if not address:
        if running_stack(args.data_dir) is None:
            read_endpoints(args.data_dir)  # none at all: says so
            raise StackNotRunning(
                f"the stack that served {args.data_dir} is gone (its endpoints.json is "
                "stale): start one with `flnet up`"
            )
        address = read_endpoints(args.data_dir)["control"]
    token = os.environ.get("FLNET_TOKEN")
    if token:
        return FlnetClient(address, token, args.tenant)
    data_dir: Path = args.data_dir

    async def cached() -> str:
        return await access_token(data_dir)

    return FlnetClient(address, cached, args.tenant)


async def follow(c: FlnetClient, run: str, args: argparse.Namespace) -> int:
    """Streams a run until it ends; exit status 0 only for FINISHED. Ctrl-C stops watching,
    not the run, and says so."""
    final = lc.RUN_STATE_UNSPECIFIED
    name = await c.run_name(run)
    try:
        if args.output == "json":
            async for event in c.watch(run):
                render.print_json(event)
                if event.HasField("state_change"):
                    final = event.state_change.to_state
        else:
            render.console.print(f"watching {name} (Ctrl-C stops watching; the run goes on)")
            with render.WatchView() as view:
                async for event in c.watch(run):
                    view.show(event)
                    if event.HasField("state_change"):
                        final = event.state_change.to_state
            render.run_detail(await c.get_run(run))
    except asyncio.CancelledError:  # Ctrl-C
        render.errors.print(
            f"stopped watching; {name} goes on (`flnet run cancel {render.short(name)}` cancels it)"
        )
        raise
    return 0 if final == lc.RUN_STATE_FINISHED else 1


# ------------------------------------------------------------------------------- tools


async def tool_check(args: argparse.Namespace) -> int:
    checked(Path(args.path))
    if args.output == "json":
        render.print_json({"problems": []})
    else:
        render.console.print(f"{args.path}: the entrypoint loads and the schema fits its config")
    return 0


async def tool_schema(args: argparse.Namespace) -> int:
    render.print_json(checked(Path(args.path))[1])
    return 0


async def tool_register(args: argparse.Namespace) -> int:
    schema = None
    if not args.image and not args.no_check:
        schema = checked(Path(args.path))[1]
    async with client(args) as c:
        res = await c.register_tool(Path(args.path), image=args.image, config_schema=schema)
    if args.output == "json":
        render.print_json({"toolVersion": res.tool_version, "created": res.created})
    else:
        verb = "registered" if res.created else "already registered"
        render.console.print(f"{verb} {res.tool_version.name}")
    return 0


async def tool_list(args: argparse.Namespace) -> int:
    async with client(args) as c:
        tools = await c.list_tools()
    render.print_json(tools) if args.output == "json" else render.tools_table(tools)
    return 0


async def tool_get(args: argparse.Namespace) -> int:
    async with client(args) as c:
        tool, versions = await c.get_tool(args.name)
    if args.output == "json":
        render.print_json({"tool": tool, "versions": versions})
    else:
        render.tool_detail(tool, versions)
    return 0


# -------------------------------------------------------------------------------- runs


async def run_submit(args: argparse.Namespace) -> int:
    async with client(args) as c:
        version = await c.latest_version(args.tool)
        inputs = await c.resolve_inputs(parse_pairs(args.input or [], "--input"))
        run = (await c.submit(version, config_of(args), inputs)).run
        if args.output == "json" and not args.watch:
            render.print_json(run)
        elif not args.watch:
            render.console.print(f"submitted {run.name} ({render.state(run.state)})")
        if args.watch:
            return await follow(c, run.name, args)
    return 0


async def run_get(args: argparse.Namespace) -> int:
    async with client(args) as c:
        run = await c.get_run(args.run)
    render.print_json(run) if args.output == "json" else render.run_detail(run)
    return 0


async def run_list(args: argparse.Namespace) -> int:
    states = [lc.RunState.Value(f"RUN_STATE_{s.upper()}") for s in args.state or []]
    async with client(args) as c:
        runs = await c.list_runs(args.tool or "", states, args.limit)
    render.print_json(runs) if args.output == "json" else render.runs_table(runs)
    return 0


async def run_watch(args: argparse.Namespace) -> int:
    async with client(args) as c:
        return await follow(c, args.run, args)


async def run_metrics(args: argparse.Namespace) -> int:
    async with client(args) as c:
        points = [e.metric async for e in c.events(args.run) if e.HasField("metric")]
    if args.name:
        points = [p for p in points if p.name in args.name]
    if args.output == "json":
        render.print_json([render.metric_row(p) for p in points])
    elif args.csv:
        render.metrics_csv(points)
    else:
        render.metrics_table(points)
    return 0


async def run_cancel(args: argparse.Namespace) -> int:
    async with client(args) as c:
        ended = await c.get_run(args.run)
        if lifecycle.is_terminal(ended.state):
            raise ValueError(
                f"{ended.name} had already ended ({lifecycle.state_name(ended.state)}): "
                "nothing to cancel"
            )
        run = await c.cancel(args.run, args.reason)
    if args.output == "json":
        render.print_json(run)
    else:
        render.console.print(f"cancel requested for {run.name} ({render.state(run.state)})")
    return 0


async def run_outputs(args: argparse.Namespace) -> int:
    async with client(args) as c:
        outputs = await c.outputs(args.run)
        saved: dict[str, str] = {}
        if args.download:
            target = Path(args.download)
            target.mkdir(parents=True, exist_ok=True)
            for o in outputs:
                path = target / output_filename(o)
                if await c.download(o.name, path) != o.sha256:
                    raise SystemExit(f"error: {path} does not match its recorded sha256")
                saved[o.output_name] = str(path)
    if args.output == "json":
        render.print_json({"outputs": outputs, "downloaded": saved})
    else:
        render.outputs_table(outputs)
        for name, where in saved.items():
            render.console.print(f"saved {name} -> {where} (sha256 verified)")
    return 0


async def run_reproduce(args: argparse.Namespace) -> int:
    """With --verify: waits for the new run and compares every output's sha256 with the
    original's; exit status 0 only when the run finished and all match."""
    async with client(args) as c:
        run = await c.reproduce(args.run)
        if args.verify:
            if args.watch and args.output != "json":
                await follow(c, run.name, args)
            again = await c.wait(run.name)
            original = await c.get_run(run.reproduce_of)
            outputs = compare_outputs(original, again)
            verified = again.state == lc.RUN_STATE_FINISHED and all(o["match"] for o in outputs)
            if args.output == "json":
                render.print_json({"run": again, "verified": verified, "outputs": outputs})
            else:
                render.reproduction_table(outputs)
                verdict = "[green]reproduced[/green]" if verified else "[red]NOT reproduced[/red]"
                render.console.print(
                    f"{verdict}: {again.name} ({render.state(again.state)}) against {original.name}"
                )
            return 0 if verified else 1
        if args.watch:
            return await follow(c, run.name, args)
    if args.output == "json":
        render.print_json(run)
    else:
        render.console.print(f"submitted {run.name}, reproducing {run.reproduce_of}")
    return 0


async def run_export(args: argparse.Namespace) -> int:
    async with client(args) as c:
        path, size = await c.export(args.run, Path(args.path) if args.path else None)
    if args.output == "json":
        render.print_json({"path": str(path), "sizeBytes": size})
    else:
        render.console.print(f"exported {args.run} -> {path} ({size} bytes, RO-Crate)")
    return 0


# ---------------------------------------------------------------------------------- db


async def db_upgrade(args: argparse.Namespace) -> int:
    """Migrates the database before control planes start (they also migrate at start; with
    several replicas, one upgrade ahead of a rollout keeps their starts quick)."""
    from flnet.control.database import upgrade
    from flnet.control.settings import default_database_url

    url = args.database_url or default_database_url(args.data_dir)
    revision = await upgrade(url)
    if args.output == "json":
        render.print_json({"revision": revision})
    else:
        render.console.print(f"database at revision {revision}")
    return 0


# ---------------------------------------------------------------------------------- gc

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>[smhd]?)")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """Seconds of a duration such as 90s, 30m, 24h or 7d (an argparse type)."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or (not m["unit"] and float(m["number"]) != 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 24h or 7d")
    return float(m["number"]) * _SECONDS.get(m["unit"], 0)


async def gc(args: argparse.Namespace) -> int:
    """Works on the database and artifact store directly, beside running control planes:
    exit status 1 when some bytes could not be removed (they are found again next time)."""
    from flnet.control.retention import Policy, run_gc
    from flnet.control.settings import default_artifact_url, default_database_url

    given: dict[str, Any] = {"dry_run": args.dry_run}  # the rest defaults to Policy's
    if args.grace is not None:
        given["grace"] = args.grace
    if args.keep_telemetry or args.telemetry_age is not None:
        given["telemetry_age"] = None if args.keep_telemetry else args.telemetry_age
    policy = Policy(**given)
    report = await run_gc(
        args.database_url or default_database_url(args.data_dir),
        args.artifact_url or default_artifact_url(args.data_dir),
        policy,
        s3_endpoint=args.s3_endpoint,
        s3_region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", ""),
    )
    if args.output == "json":
        render.print_json(report.to_dict())
    else:
        render.gc_summary(report.to_dict())
    return 1 if report.errors else 0


# --------------------------------------------------------------------------------- dev


async def dev_connect(args: argparse.Namespace) -> int:
    from flnet.cli.dev import connect

    async with client(args) as c:
        inputs = await c.resolve_inputs(parse_pairs(args.input or [], "--input"))
        return await connect(
            c, Path(args.path), config_of(args), inputs, args.data_dir, args.output == "json"
        )


async def dev_config(args: argparse.Namespace) -> int:
    values = {k: parse_value(v) for k, v in parse_pairs(args.values, "KEY=VALUE").items()}
    async with client(args) as c:
        run = await c.dev_config(args.run, values)
    if args.output == "json":
        render.print_json(run)
    else:
        render.console.print(f"configuration of {run.name} is now {dict(run.config)}")
    return 0


async def dev_test(args: argparse.Namespace) -> int:
    async with client(args) as c:
        run = await c.dev_test(args.run)
        if args.watch:
            return await follow(c, run.name, args)
    if args.output == "json":
        render.print_json(run)
    else:
        render.console.print(f"test execution {run.name} started")
    return 0


# ------------------------------------------------------------------------------- fleet


async def orchestrator_list(args: argparse.Namespace) -> int:
    async with client(args) as c:
        found = await c.orchestrators()
    render.print_json(found) if args.output == "json" else render.orchestrators_table(found)
    return 0


async def quota_get(args: argparse.Namespace) -> int:
    async with client(args) as c:
        quota = await c.quota(args.quota_tenant or c.tenant)
    render.print_json(quota) if args.output == "json" else render.quota_detail(quota)
    return 0


async def quota_set(args: argparse.Namespace) -> int:
    async with client(args) as c:
        quota = await c.set_quota(args.quota_tenant, args.runs, args.cpu_millis, args.memory_bytes)
    render.print_json(quota) if args.output == "json" else render.quota_detail(quota)
    return 0


# ------------------------------------------------------------------------------- stack


async def up(args: argparse.Namespace) -> int:
    if args.replicas < 1:
        raise ValueError("--replicas: at least 1")
    stack = Stack(
        args.data_dir,
        args.control_port,
        backend=args.backend,
        oidc_port=args.oidc_port,
        gateway_port=args.gateway_port,
        replicas=args.replicas,
    )
    ready = asyncio.Event()

    async def announce() -> None:
        await ready.wait()
        if args.output == "json":
            render.print_json(stack.endpoints)
        else:
            for name, address in stack.endpoints.items():
                render.console.print(f"{name:<13} {address}")
            render.console.print(f"endpoints in {args.data_dir / 'endpoints.json'}; Ctrl-C stops")

    announcer = asyncio.create_task(announce())
    await run_stack(stack, ready)
    announcer.cancel()
    return 0


async def demo(args: argparse.Namespace) -> int:
    from flnet.cli.demo import run_demo

    return await run_demo(args)


# -------------------------------------------------------------------------------- main


def add_run_inputs(s: argparse.ArgumentParser) -> None:
    """A run's configuration and inputs, as `run submit` and `dev connect` take them."""
    s.add_argument(
        "-c",
        "--config",
        action="append",
        metavar="KEY=VALUE",
        help="a setting (VALUE as JSON, else a string; repeat for several)",
    )
    s.add_argument("--config-file", metavar="JSON", help="settings from a JSON file")
    s.add_argument(
        "-i",
        "--input",
        action="append",
        metavar="NAME=PATH|ARTIFACT",
        help="an input: a file to upload, or an artifact already uploaded (repeat for several)",
    )


def add_global_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes, before or after its name (`flnet up --data-dir D`).
    After it they override what was given before; without `defaults` they set nothing
    when absent."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    p.add_argument(
        "--data-dir",
        type=Path,
        default=default(default_data_dir()),
        help="platform data ($FLNET_DATA_DIR, default ~/.local/share/flnet)",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default=default("text"),
        help="json: results as JSON on stdout, errors as JSON on stderr",
    )
    p.add_argument(
        "--address",
        default=default(None),
        help="control plane address (default: from endpoints.json)",
    )
    p.add_argument(
        "--tenant", default=default(None), help="tenant of the resources (default: the token's)"
    )


def _commands(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every command's own parser (the leaves of the subcommand tree)."""
    groups = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield p
    for group in groups:
        for child in dict.fromkeys(group.choices.values()):  # aliases appear twice
            yield from _commands(child)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flnet", description="FLNet: governed scientific tools.")
    add_global_options(p, defaults=True)
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(parent: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = parent.add_parser(name, help=help)
        sp.set_defaults(handler=handler)
        return sp

    s = cmd(sub, "up", up, "run the platform on loopback until Ctrl-C")
    s.add_argument("--control-port", type=int, default=0, help="the control plane's port (0: any)")
    s.add_argument(
        "--oidc-port", type=int, default=0, help="the development OIDC issuer's port (0: any)"
    )
    s.add_argument("--gateway-port", type=int, default=0, help="the gateway's (UI) port (0: any)")
    s.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="control-plane replicas behind the gateway (more than one: FLNET_DATABASE_URL "
        "must name a PostgreSQL database)",
    )
    s.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default=os.environ.get("FLNET_BACKEND", DEFAULT_BACKEND),
        help="where runs execute: local processes (development), containers, or Docker Swarm "
        "services ($FLNET_BACKEND)",
    )
    s = cmd(sub, "demo", demo, "start the stack, run an example tool, show its provenance")
    s.add_argument(
        "--tool",
        type=Path,
        default=Path("examples/tools/logreg"),
        help="the tool folder the demo registers and runs (with a sample.csv)",
    )

    db = sub.add_parser("db", help="the provenance database").add_subparsers(
        dest="action", required=True
    )
    s = cmd(db, "upgrade", db_upgrade, "create or upgrade the schema to this version's")
    s.add_argument(
        "--database-url",
        default=os.environ.get("FLNET_DATABASE_URL", ""),
        help="SQLAlchemy URL ($FLNET_DATABASE_URL; default: SQLite in the data dir)",
    )

    s = cmd(
        sub,
        "gc",
        gc,
        "remove inputs no run references, old telemetry, and what no record points to",
    )
    s.add_argument("--dry-run", action="store_true", help="report what would go; change nothing")
    s.add_argument(
        "--grace",
        type=duration,
        metavar="DURATION",
        help="spare whatever was uploaded, used or written more recently (default 24h); "
        "longer than the longest upload",
    )
    kept = s.add_mutually_exclusive_group()
    kept.add_argument(
        "--telemetry-age",
        type=duration,
        metavar="DURATION",
        help="drop the logs, metrics and progress of runs that ended longer ago (default 30d)",
    )
    kept.add_argument("--keep-telemetry", action="store_true", help="drop no telemetry")
    s.add_argument(
        "--database-url",
        default=os.environ.get("FLNET_DATABASE_URL", ""),
        help="SQLAlchemy URL ($FLNET_DATABASE_URL; default: SQLite in the data dir)",
    )
    s.add_argument(
        "--artifact-url",
        default=os.environ.get("FLNET_ARTIFACT_URL", ""),
        help="file:///DIR or s3://BUCKET/PREFIX ($FLNET_ARTIFACT_URL; default: the data dir's)",
    )
    s.add_argument(
        "--s3-endpoint",
        default=os.environ.get("FLNET_S3_ENDPOINT", ""),
        help="an S3-compatible server ($FLNET_S3_ENDPOINT; credentials: AWS_*)",
    )

    actions = {}
    for component in ("control", "orchestrator"):
        comp = sub.add_parser(component, help=f"the {component} component")
        actions[component] = comp.add_subparsers(dest="action", required=True)
        serve = actions[component].add_parser(
            "serve", help=f"serve the {component} until SIGTERM", add_help=False
        )
        serve.set_defaults(component=component)
    cmd(actions["orchestrator"], "list", orchestrator_list, "the orchestrators runs go to (admin)")

    quota = sub.add_parser("quota", help="tenants' quotas (admin)").add_subparsers(
        dest="action", required=True
    )
    s = cmd(quota, "get", quota_get, "a tenant's quota and what it uses")
    s.add_argument("quota_tenant", metavar="TENANT", help="the tenant (default: yours)", nargs="?")
    s = cmd(quota, "set", quota_set, "replace a tenant's quota (0: unlimited)")
    s.add_argument("quota_tenant", metavar="TENANT", help="the tenant")
    s.add_argument("--runs", type=int, default=0, help="most runs placed at once")
    s.add_argument("--cpu-millis", type=int, default=0, help="most CPU reserved (millicores)")
    s.add_argument("--memory-bytes", type=int, default=0, help="most memory reserved (bytes)")

    tool = sub.add_parser("tool", help="register and inspect tools").add_subparsers(
        dest="action", required=True
    )
    s = cmd(tool, "register", tool_register, "pack and upload the tool at PATH, and register it")
    s.add_argument("path", help="a tool folder, or its tool.yaml")
    s.add_argument("--image", action="store_true", help="build and register its image (docker)")
    s.add_argument(
        "--no-check",
        action="store_true",
        help="do not load the tool here (flnet tool check): tool.yaml's config_schema is "
        "registered as it is, nothing derived",
    )
    s = cmd(tool, "check", tool_check, "load the tool at PATH and check it against tool.yaml")
    s.add_argument("path", help="a tool folder, or its tool.yaml")
    s = cmd(
        tool,
        "schema",
        tool_schema,
        "the config schema the tool at PATH registers with: derived from its Config, "
        "tool.yaml's config_schema merged over it",
    )
    s.add_argument("path", help="a tool folder, or its tool.yaml")
    cmd(tool, "list", tool_list, "list tools")
    cmd(tool, "get", tool_get, "show a tool and its versions").add_argument(
        "name", help="a tool name, or its full resource name"
    )
    add_image_commands(sub)
    add_login_command(sub)

    run = sub.add_parser("run", help="submit and observe runs").add_subparsers(
        dest="action", required=True
    )
    run_id = "a run: its id, an unambiguous start of it, or its full resource name"
    s = cmd(run, "submit", run_submit, "submit a run of TOOL (name, name@version)")
    s.add_argument("tool", help="name (its latest version) or name@version")
    add_run_inputs(s)
    s.add_argument("-w", "--watch", action="store_true", help="follow the run until it ends")
    cmd(run, "get", run_get, "show a run's provenance").add_argument("run", help=run_id)
    s = cmd(run, "list", run_list, "list runs")
    s.add_argument("--tool", help="only runs of this tool (name or name@version)")
    s.add_argument(
        "--state",
        action="append",
        choices=[lifecycle.state_name(v).lower() for v in lc.RunState.values() if v],
        help="only runs in this state (repeat for several)",
    )
    s.add_argument("--limit", type=int, default=50, help="at most this many runs (newest first)")
    s = cmd(run, "watch", run_watch, "stream a run's events until it ends")
    s.add_argument("run", help=run_id)
    s = cmd(run, "metrics", run_metrics, "a run's metric history so far")
    s.add_argument("run", help=run_id)
    s.add_argument("--name", action="append", help="only this metric (repeat for several)")
    s.add_argument("--csv", action="store_true", help="as CSV: name,step,value,unit,time")
    s = cmd(run, "cancel", run_cancel, "cancel a run")
    s.add_argument("run", help=run_id)
    s.add_argument("--reason", default="cancelled from the CLI", help="recorded with the run")
    s = cmd(run, "outputs", run_outputs, "list (and download) a run's outputs")
    s.add_argument("run", help=run_id)
    s.add_argument(
        "--download",
        metavar="DIR",
        help="save them in DIR, named for their media type, each checked against its sha256",
    )
    s = cmd(run, "reproduce", run_reproduce, "run again with the same digest, config, inputs")
    s.add_argument("run", help=run_id)
    s.add_argument("-w", "--watch", action="store_true", help="follow the new run until it ends")
    s.add_argument(
        "--verify",
        action="store_true",
        help="wait for the new run and check every output's sha256 against the original's",
    )
    s = cmd(run, "export", run_export, "the run's provenance as an RO-Crate zip")
    s.add_argument("run", help=run_id)
    s.add_argument("path", nargs="?", help="where to write it (default: RUN.crate.zip)")

    dev = sub.add_parser("dev", help="develop a tool against the platform").add_subparsers(
        dest="action", required=True
    )
    s = cmd(dev, "connect", dev_connect, "run the tool at PATH from source, connected")
    s.add_argument("path", help="a tool folder, or its tool.yaml")
    add_run_inputs(s)
    s = cmd(dev, "config", dev_config, "push configuration to a development session")
    s.add_argument("run", help="the development session (" + run_id + ")")
    s.add_argument("values", nargs="+", metavar="KEY=VALUE", help="settings (VALUE as JSON)")
    s = cmd(dev, "test", dev_test, "execute the tool once in a development session")
    s.add_argument("run", help="the development session (" + run_id + ")")
    s.add_argument("-w", "--watch", action="store_true", help="follow the test run until it ends")
    for command in _commands(p):
        if "component" not in command._defaults:  # `control serve`: its own flags follow
            add_global_options(command, defaults=False)
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "component", None):
        # `flnet control serve ...`: the component's own flags follow.
        os.environ.setdefault("FLNET_DATA_DIR", str(args.data_dir))
        if args.component == "control":
            from flnet.control.__main__ import main as control_main

            control_main(rest)
            return
        from flnet.orchestrator.__main__ import main as orchestrator_main

        sys.exit(orchestrator_main(rest))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.data_dir = args.data_dir.expanduser().resolve()
    try:
        code = asyncio.run(args.handler(args))
    except grpc.aio.AioRpcError as e:
        render.error(CallError.of(e), json_output=args.output == "json")
        code = 2
    except (StackNotRunning, ComponentFailed, ToolSpecError, ValueError, LoginError) as e:
        render.error(str(e), json_output=args.output == "json")
        code = 2
    except BrokenPipeError:  # `flnet run list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except OSError as e:  # a file named on the command line: one line, no traceback
        where = f": {e.filename}" if e.filename else ""
        render.error(f"{e.strerror or e}{where}", json_output=args.output == "json")
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
