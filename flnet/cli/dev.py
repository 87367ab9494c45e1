"""`flnet dev connect`: run a tool from source as a development session. The engine runs
in this process, connected to the platform; `flnet dev config` pushes configuration and
`flnet dev test` executes the already loaded tool again, each time as a recorded run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flnet.cli import render
from flnet.client import FlnetClient
from flnet.runtime import EngineConfig, run_engine
from flnet.toolspec import load_tool_spec


async def connect(
    c: FlnetClient,
    path: Path,
    config: dict[str, Any],
    inputs: dict[str, str],
    data_dir: Path,
    json_output: bool = False,
) -> int:
    spec = load_tool_spec(path)
    version = (await c.register_tool(path)).tool_version
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
