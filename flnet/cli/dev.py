"""`flnet dev connect`: run a tool from source as a development session. The engine runs
in this process, connected to the platform; `flnet dev config` pushes configuration and
`flnet dev test` executes the tool again, each time as a recorded run. The session works on
a development version of the tool ("1.0.0+dev.<digest>": the release in tool.yaml stays
immutable), and each test run reloads the tool from its folder and records the digest of
what it loaded: edit, save, `flnet dev test`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from flnet.cli import render
from flnet.cli.contract import checked
from flnet.client import FlnetClient
from flnet.runtime import EngineConfig, run_engine


async def connect(
    c: FlnetClient,
    path: Path,
    config: dict[str, Any],
    inputs: dict[str, str],
    data_dir: Path,
    json_output: bool = False,
) -> int:
    # No bytecode caches: an edit saved within the second of the last load, at the same
    # size, would otherwise be read from a stale one.
    sys.dont_write_bytecode = True
    spec, schema = checked(path)
    version = (await c.register_tool(path, development=True, config_schema=schema)).tool_version
    created = await c.submit(version.name, config, inputs, dev_session=True)
    run = created.run
    run_id = run.name.rsplit("/", 1)[1]
    work = data_dir / "dev" / run_id
    if json_output:
        render.print_json({"session": run, "toolVersion": version.name})
    else:
        render.console.print(
            f"development session [bold]{run_id}[/bold] of {version.name}\n"
            f"  flnet dev config {run_id} KEY=VALUE ...   change the configuration\n"
            f"  flnet dev test {run_id} --watch           execute the tool\n"
            "Ctrl-C ends the session."
        )
    config_ = EngineConfig(
        run=run.name,
        control_address=c.address,
        tool_dir=path.resolve(),
        entrypoint=spec.entrypoint,
        credential=created.dev_credential,
        input_dir=work / "input",
        output_dir=work / "output",
    )
    return await run_engine(config_)
