"""The development loop (issue 13): a session works on a development version of the tool
(its release in tool.yaml stays immutable), each test run reloads the tool from its folder
and records the digest of what it loaded, and reconnecting after an edit just works."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flnet import lifecycle, timeouts
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.cli.dev import connect
from flnet.client import FlnetClient
from tests.conftest import packed
from tests.identity import IDENTITY
from tests.integration.conftest import BEHAVE, Stack

S = lc.RunState


@pytest.fixture
def tool(tmp_path: Path) -> Path:
    copy = tmp_path / "behave"
    shutil.copytree(BEHAVE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@contextlib.asynccontextmanager
async def session(
    client: FlnetClient, tool: Path, data_dir: Path
) -> AsyncIterator[tuple[rp.Run, asyncio.Task[int]]]:
    """`flnet dev connect` in this process: the session once it waits for tests."""
    before = {r.name for r in await client.list_runs("", [], 1000)}
    engine = asyncio.create_task(
        connect(client, tool, {"mode": "print", "lines": 1}, {}, data_dir, json_output=True)
    )
    try:
        while True:
            assert not engine.done(), engine.result()
            runs = [r for r in await client.list_runs("", [], 1000) if r.name not in before]
            if runs and runs[0].state == S.RUN_STATE_INITIALIZED:
                yield runs[0], engine
                break
            await asyncio.sleep(0.05)
    finally:
        with contextlib.suppress(Exception):
            await client.cancel(runs[0].name, "the test is over")
        await timeouts.wait_for(engine, 30)


async def execute(client: FlnetClient, session: str) -> tuple[rp.Run, list[str]]:
    run = await client.dev_test(session)
    ended = await client.wait(run.name)
    assert ended.state == S.RUN_STATE_FINISHED, ended.error
    printed = [e.log.message async for e in client.events(run.name) if e.log.logger == "stdout"]
    return ended, printed


async def test_each_test_run_runs_the_folder_as_it_is_now(
    stack: Stack, tool: Path, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{stack.control.port}"
    async with FlnetClient(address, IDENTITY.token()) as client:
        async with session(client, tool, tmp_path / "dev") as (dev, _):
            version = dev.tool_version
            digest = hashlib.sha256(packed(tool)).hexdigest()
            assert version.endswith(f"/versions/1.0.0+dev.{digest[:12]}")
            first, printed = await execute(client, dev.name)
            assert printed == ["printed 0", "no newline at the end"]
            assert first.artifact_digest == f"sha256:{digest}"
            assert first.dev_session_run == dev.name

            # Edit, save, test again: the same session runs the new code.
            source = tool / "tool.py"
            source.write_text(source.read_text().replace('f"printed {i}"', 'f"edited {i}"'))
            second, printed = await execute(client, dev.name)
            assert printed == ["edited 0", "no newline at the end"]
            assert second.artifact_digest == f"sha256:{hashlib.sha256(packed(tool)).hexdigest()}"
            assert second.artifact_digest != first.artifact_digest
            assert second.tool_version == version  # the session's version

        # Reconnecting after the edit: a development version of its own, no ALREADY_EXISTS.
        async with session(client, tool, tmp_path / "dev") as (again, _):
            assert again.tool_version != version
            assert again.tool_version.endswith(
                f"+dev.{hashlib.sha256(packed(tool)).hexdigest()[:12]}"
            )
            _, printed = await execute(client, again.name)
            assert printed == ["edited 0", "no newline at the end"]

        # The development sessions and their test runs say what they are.
        kinds = {
            r.name: (r.dev_session, bool(r.dev_session_run))
            for r in await client.list_runs("", [], 1000)
        }
        assert kinds[dev.name] == (True, False)
        assert kinds[first.name] == (False, True)
        assert all(lifecycle.is_terminal(r.state) for r in await client.list_runs("", [], 1000))
