"""A source version runs the bytes it was registered with, through the real stack (process
backend): not what the author's folder holds now, not what an earlier run left in its tool
directory, and still when the control plane's unpacked snapshot is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.toolspec import load_tool_spec
from tests.conftest import TENANT
from tests.integration.conftest import BEHAVE, Stack, all_events

S = lc.RunState

# Each run reports what it finds in its own tool directory, then writes there.
RESULT = '    result: dict[str, object] = {"lines": c.lines, "mode": c.mode}\n'
PROBE = (
    '    result: dict[str, object] = {"lines": c.lines, "mode": c.mode, "marker": "registered"}\n'
    '    state = Path(__file__).with_name("state.txt")\n'
    '    result["state"] = state.read_text() if state.exists() else ""\n'
    '    result["tool_dir"] = str(Path(__file__).resolve().parent)\n'
    '    state.write_text("written by a run")\n'
)


def author_copy(tmp_path: Path) -> Path:
    """The author's folder: a copy of the behave tool, reporting what its directory holds."""
    folder = tmp_path / "author" / "behave"
    shutil.copytree(BEHAVE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    code = (folder / "tool.py").read_text()
    assert code.count(RESULT) == 1
    (folder / "tool.py").write_text(code.replace(RESULT, PROBE))
    return folder


async def register(stack: Stack, folder: Path) -> tp.ToolVersion:
    spec = load_tool_spec(folder)
    res = await stack.api.tools.CreateToolVersion(
        ts.CreateToolVersionRequest(
            parent=f"{TENANT}/tools/registered-bytes",
            tool_version=await stack.api.with_source(spec),
        )
    )
    return res.tool_version


async def finished(stack: Stack, version: tp.ToolVersion) -> tuple[dict[str, Any], list[str]]:
    """Runs `version` to its end: its result output and its log lines."""
    run = await stack.submit(version.name, mode="finish", lines=2)
    done = await stack.wait_state(run.name, within=30)
    assert done.state == S.RUN_STATE_FINISHED, done.error
    assert done.artifact_digest == "sha256:" + version.source.sha256
    [output] = done.outputs
    data = b"".join(
        [
            msg.data
            async for msg in stack.api.artifacts.DownloadArtifact(
                asv.DownloadArtifactRequest(name=output.name)
            )
        ]
    )
    logs = [e.log.message for e in await all_events(stack.api, run.name) if e.HasField("log")]
    return json.loads(data), logs


async def test_a_run_executes_the_registered_bytes_in_a_tool_dir_of_its_own(
    stack: Stack, tmp_path: Path
) -> None:
    folder = author_copy(tmp_path)
    version = await register(stack, folder)
    assert len(version.source.sha256) == 64
    # The author changes the folder after registering: what it logs, what it outputs, and
    # a file the tool reads.
    code = (folder / "tool.py").read_text()
    edited = code.replace('"line %d"', '"edited line %d"').replace('"registered"', '"edited"')
    assert edited.count("edited") == 2
    (folder / "tool.py").write_text(edited)
    (folder / "state.txt").write_text("planted in the author's folder")

    first, first_logs = await finished(stack, version)
    second, second_logs = await finished(stack, version)

    for result, logs in ((first, first_logs), (second, second_logs)):
        assert result["marker"] == "registered"
        assert result["state"] == ""  # neither the author's file nor the first run's
        assert [m for m in logs if "line " in m] == ["line 0", "line 1"]
        assert Path(result["tool_dir"]).is_relative_to(tmp_path / "orchestrator")
        assert Path(result["tool_dir"]).name == "tool"
    assert first["tool_dir"] != second["tool_dir"]
    snapshot = stack.control.settings.data_dir / "sources" / version.source.sha256
    assert not (snapshot / "state.txt").exists()
    assert '"registered"' in (snapshot / "tool.py").read_text()


async def test_a_run_unpacks_the_archive_again_when_the_snapshot_is_gone(
    stack: Stack, tmp_path: Path
) -> None:
    """As another replica would, that never admitted the version."""
    version = await register(stack, author_copy(tmp_path))
    sources = stack.control.settings.data_dir / "sources"
    shutil.rmtree(sources)

    result, _ = await finished(stack, version)

    assert result["marker"] == "registered"
    assert (sources / version.source.sha256 / "tool.py").is_file()
    assert [p.name for p in sources.iterdir()] == [version.source.sha256]
