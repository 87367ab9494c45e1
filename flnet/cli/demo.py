"""`flnet demo`: the walking skeleton end to end. Starts the stack (orchestrator and control
plane as separate processes), registers an example tool, submits a run with its sample
input, streams it live, then checks every output's sha256 against the provenance."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.cli import render
from flnet.cli.client import FlnetClient
from flnet.cli.stack import Stack, run_stack


async def run_demo(args: argparse.Namespace) -> int:
    tool_dir = Path(args.tool).resolve()
    sample = tool_dir / "sample.csv"
    data_dir: Path = args.data_dir
    stack = Stack(data_dir)
    ready = asyncio.Event()
    runner = asyncio.create_task(run_stack(stack, ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        waiter.cancel()
        await runner  # raises why the stack did not start
        return 1
    try:
        render.console.rule("FLNet demo")
        for name, address in stack.endpoints.items():
            render.console.print(f"{name:<13} {address}")
        async with FlnetClient(stack.endpoints["control"]) as c:
            version = (await c.register_tool(tool_dir)).tool_version
            render.console.print(f"registered {version.name}")
            artifact = await c.upload(sample, "text/csv")
            render.console.print(f"uploaded {sample.name} -> {artifact.name} ({artifact.sha256})")
            run = (await c.submit(version.name, {}, {"data": artifact.name})).run
            render.console.print(f"submitted {run.name}")
            render.console.rule("live")
            with render.WatchView() as view:
                async for event in c.watch(run.name):
                    view.show(event)
            render.console.rule("provenance")
            run = await c.get_run(run.name)
            render.run_detail(run)
            if run.state != lc.RUN_STATE_FINISHED:
                render.console.print("[red]the run did not finish[/red]")
                return 1
            target = data_dir / "outputs" / run.name.rsplit("/", 1)[1]
            target.mkdir(parents=True, exist_ok=True)
            for output in run.outputs:
                path = target / output.output_name
                digest = await c.download(output.name, path)
                if digest != output.sha256:
                    render.console.print(f"[red]{path}: sha256 {digest} != {output.sha256}[/red]")
                    return 1
                render.console.print(f"[green]verified[/green] {path}  sha256 {digest}")
        render.console.rule("where things are")
        render.console.print(f"provenance database  {data_dir / 'flnet.db'}")
        render.console.print(f"artifact store       {data_dir / 'artifacts'}")
        render.console.print(f"outputs              {target}")
        render.console.print(f"logs                 {data_dir / 'logs'}")
        return 0
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await stack.stop()
