"""`flnet demo`: the walking skeleton end to end. Starts the stack (orchestrator and control
plane as separate processes), registers an example tool, submits a run with its sample
input, streams it live, then checks every output's sha256 against the provenance."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.cli import render
from flnet.cli.contract import checked
from flnet.cli.login import access_token, dev_login, save_credentials
from flnet.cli.stack import Stack, run_stack
from flnet.client import FlnetClient
from flnet.client.filenames import output_filename


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
    text = args.output != "json"
    say = render.console.print if text else _silent
    try:
        if text:
            render.console.rule("FLNet demo")
        for name, address in stack.endpoints.items():
            say(f"{name:<13} {address}")
        if stack.embedded_issuer:
            # Signs in as the development admin through the ordinary code + PKCE flow, and
            # caches the token: `flnet run ...` against this data dir works afterwards too.
            save_credentials(data_dir, await dev_login(data_dir, stack.issuer))
            say(f"signed in to {stack.issuer} as the development admin")

        async def token() -> str:
            return await access_token(data_dir)

        async with FlnetClient(stack.endpoints["control"], token) as c:
            _, schema = checked(tool_dir)  # as `flnet tool register` does
            version = (await c.register_tool(tool_dir, config_schema=schema)).tool_version
            say(f"registered {version.name}")
            artifact = await c.upload(sample, "text/csv")
            say(f"uploaded {sample.name} -> {artifact.name} ({artifact.sha256})")
            run = (await c.submit(version.name, {}, {"data": artifact.name})).run
            say(f"submitted {run.name}")
            if text:
                render.console.rule("live")
                with render.WatchView() as view:
                    async for event in c.watch(run.name):
                        view.show(event)
                render.console.rule("provenance")
            else:
                async for event in c.watch(run.name):
                    render.print_json(event)
            run = await c.get_run(run.name)
            if text:
                render.run_detail(run)
            if run.state != lc.RUN_STATE_FINISHED:
                say("[red]the run did not finish[/red]")
                return 1
            target = data_dir / "outputs" / run.name.rsplit("/", 1)[1]
            target.mkdir(parents=True, exist_ok=True)
            verified: dict[str, str] = {}
            for output in run.outputs:
                path = target / output_filename(output)
                digest = await c.download(output.name, path)
                if digest != output.sha256:
                    say(f"[red]{path}: sha256 {digest} != {output.sha256}[/red]")
                    return 1
                verified[output.output_name] = str(path)
                say(f"[green]verified[/green] {path}  sha256 {digest}")
        places = {
            "provenance database": _shown(os.environ.get("FLNET_DATABASE_URL", ""))
            or data_dir / "flnet.db",
            "artifact store": os.environ.get("FLNET_ARTIFACT_URL") or data_dir / "artifacts",
            "outputs": target,
            "logs": data_dir / "logs",
        }
        page = f"{stack.ui}runs/{run.name.rsplit('/', 1)[1]}"
        if text:
            render.console.rule("where things are")
            for what, where in places.items():
                render.console.print(f"{what:<20} {where}")
            render.console.rule("in the browser")
            render.console.print(f"the demo run       {page}")
            render.console.print(
                f"sign in as admin   password in {data_dir}/oidc/dev-credentials.json"
            )
        else:
            render.print_json(
                {
                    "run": run,
                    "verified": verified,
                    **{k: str(v) for k, v in places.items()},
                    "page": page,
                }
            )
        if text and sys.stdin.isatty():
            # Interactive: the stack stays up so that the page can be opened.
            render.console.print("the stack keeps running; Ctrl-C stops it")
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        elif text:
            render.console.print(
                f"the stack stops now: `flnet --data-dir {data_dir} up` serves this run again "
                "(at the address it prints)"
            )
        return 0
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await stack.stop()


def _silent(*_: object, **__: object) -> None:
    """`say` in JSON mode: human text would corrupt the JSON lines."""


def _shown(url: str) -> str:
    """A database URL as it may be printed: the password masked."""
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True) if url else ""
