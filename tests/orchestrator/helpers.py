"""Helpers of the orchestrator tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import asyncio
import itertools
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from flnet.api.orchestrator.v1 import orchestrator_service_pb2 as pb
from flnet.api.orchestrator.v1 import orchestrator_service_pb2_grpc as pb_grpc
from flnet.orchestrator.app import OrchestratorApp

# Generous: a loaded 2-core machine starts two Python interpreters per launch.
TIMEOUT = 60.0

FAKE_ENGINE = """\
import os, runpy
runpy.run_path(os.path.join(os.environ["FLNET_TOOL_DIR"], "tool.py"), run_name="__main__")
"""


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def details(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """ErrorInfo.reason (domain checked) and the BadRequest fields of an error."""
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "flnet.orchestrator"
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, fields


async def wait_for(predicate: Callable[[], bool], limit: float = TIMEOUT) -> None:
    """Polls a condition the test cannot await otherwise (a file another process writes)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - no event to await across processes
            await asyncio.sleep(0.02)


@dataclass
class Orchestrator:
    app: OrchestratorApp
    stub: pb_grpc.OrchestratorServiceAsyncStub
    address: str
    data_dir: Path
    tmp_path: Path
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def tool(self, body: str) -> Path:
        """A tool directory whose tool.py is `body`."""
        directory = self.tmp_path / f"tool{next(self._ids)}"
        directory.mkdir()
        (directory / "tool.py").write_text(textwrap.dedent(body))
        return directory

    def run_name(self, tenant: str = "acme") -> str:
        return f"tenants/{tenant}/runs/r{next(self._ids)}"

    async def launch(
        self, tool: str | Path, run: str | None = None, **fields: Any
    ) -> pb.RunContainer:
        """Launches a tool (the body of its tool.py, or its directory) as a run and returns
        its container. `fields` go to LaunchRunRequest."""
        fields.setdefault("entrypoint", "tool.py:main")
        fields.setdefault("control_address", "127.0.0.1:1")
        request = pb.LaunchRunRequest(
            run=run or self.run_name(),
            source_path=str(tool if isinstance(tool, Path) else self.tool(tool)),
            **fields,
        )
        response = await self.stub.LaunchRun(request, timeout=TIMEOUT)
        return response.container

    async def watch(self, after_sequence: int = 0) -> AsyncIterator[pb.WatchContainersResponse]:
        call = self.stub.WatchContainers(pb.WatchContainersRequest(after_sequence=after_sequence))
        try:
            async for event in call:
                yield event
        finally:
            call.cancel()

    async def events_of(
        self, run: str, *, until: int = pb.CONTAINER_STATE_EXITED, limit: float = TIMEOUT
    ) -> list[pb.WatchContainersResponse]:
        """The run's events from the start of the log up to the first in state `until`."""
        events: list[pb.WatchContainersResponse] = []
        async with asyncio.timeout(limit):
            async for event in self.watch():
                if event.container.run == run:
                    events.append(event)
                    if event.container.state == until:
                        return events
        raise AssertionError("the watch ended")

    async def exited(self, run: str, limit: float = TIMEOUT) -> pb.RunContainer:
        return (await self.events_of(run, limit=limit))[-1].container

    def workdir(self, run: str) -> Path:
        _, tenant, _, run_id = run.split("/")
        return self.data_dir / "orchestrator" / "runs" / f"{tenant}_{run_id}"


async def serve_module(
    *args: str, env: Mapping[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    """Starts ``python -m flnet.orchestrator --listen 127.0.0.1:0 ARGS`` and returns it with
    the port it logs once listening. The caller ends it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flnet.orchestrator",
        "--listen",
        "127.0.0.1:0",
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, "the orchestrator exited before listening"
                if match := re.search(r"listening on \S+, port (\d+)", line):
                    return process, int(match[1])
    except BaseException:
        process.kill()
        await process.wait()
        raise


def process_gone(pid: int) -> bool:
    """True when the process no longer exists or is a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


class StartOrchestrator(Protocol):
    """The `start_orchestrator` fixture: OrchestratorApp keyword arguments in."""

    async def __call__(self, data_dir: Path | None = None, **kwargs: Any) -> Orchestrator: ...


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start
