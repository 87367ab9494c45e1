"""Helpers of the orchestrator tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import asyncio
import itertools
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import duration_pb2

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


def process_gone(pid: int) -> bool:
    """True when the process no longer exists or is a zombie waiting for its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


class StartOrchestrator(Protocol):
    """The `start_orchestrator` fixture: OrchestratorApp keyword arguments in."""

    async def __call__(self, **kwargs: Any) -> Orchestrator: ...


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start
