"""Helpers of the orchestrator tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import asyncio
import builtins
import itertools
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from flnet import timeouts
from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.orchestrator.app import OrchestratorApp
from flnet.orchestrator.backend import RunName
from flnet.orchestrator.convert import container_to_proto
from flnet.orchestrator.link import Identity
from tests.orchestrator.hand_control import HandControl, status_code

# Generous: a loaded 2-core machine starts two Python interpreters per launch.
TIMEOUT = 60.0
# What the tests' in-process orchestrators register as.
ORCHESTRATOR_IDENTITY = Identity(
    "test", cpu_millis=64_000, memory_bytes=64 * 1024**3, run_slots=64, labels={"site": "test"}
)

FAKE_ENGINE = """\
import os, runpy
runpy.run_path(os.path.join(os.environ["FLNET_TOOL_DIR"], "tool.py"), run_name="__main__")
"""


_IDS = itertools.count(1)


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


class CommandFailed(Exception):
    """A command the orchestrator refused: its status code, message, ErrorInfo reason (domain
    checked) and BadRequest field violations."""

    def __init__(self, result: sp.CommandResult) -> None:
        super().__init__(result.message)
        self.result = result
        self.code = status_code(result)
        self.message = result.message
        status = status_pb2.Status.FromString(result.status_details)
        assert status.code == result.code
        assert status.message == result.message
        self.reason, self.fields = "", []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                assert info.domain == "flnet.orchestrator"
                self.reason = info.reason
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.fields = [v.field for v in bad.field_violations]

    @property
    def details(self) -> tuple[str, list[str]]:
        return self.reason, self.fields


async def wait_for(predicate: Callable[[], bool], limit: float = TIMEOUT) -> None:
    """Polls a condition the test cannot await otherwise (a file another process writes)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - no event to await across processes
            await asyncio.sleep(0.02)


@dataclass
class Orchestrator:
    """An orchestrator under test, attached to the test's HandControl: commands go through
    the real session; what the backend holds is read off the backend."""

    app: OrchestratorApp
    control: HandControl
    data_dir: Path
    tmp_path: Path
    # Index of the control's first report that may be this orchestrator's (the reports of
    # an orchestrator that ran before it over the same control come before).
    since: int = 0
    # Shared: orchestrators of one test (one tmp_path) get tool dirs and runs of their own.
    _ids: itertools.count[int] = field(default_factory=lambda: _IDS)

    def tool(self, body: str) -> Path:
        """A tool directory whose tool.py is `body`."""
        directory = self.tmp_path / f"tool{next(self._ids)}"
        directory.mkdir()
        (directory / "tool.py").write_text(textwrap.dedent(body))
        return directory

    def run_name(self, tenant: str = "acme") -> str:
        return f"tenants/{tenant}/runs/r{next(self._ids)}"

    async def command(self, command: sp.FleetCommand) -> pb.RunContainer:
        """Carries out a command; CommandFailed when the orchestrator refuses it."""
        result = await self.control.command(command, TIMEOUT)
        if result.code:
            raise CommandFailed(result)
        return result.container

    def launch_command(
        self, tool: str | Path | None, run: str | None = None, **fields: Any
    ) -> sp.FleetCommand:
        """The command launching a tool (the body of its tool.py, or its directory; None: no
        artifact) as a run. `fields` go to LaunchRunRequest."""
        fields.setdefault("entrypoint", "tool.py:main")
        fields.setdefault("control_address", "127.0.0.1:1")
        if tool is not None and "source_path" not in fields and "image_digest" not in fields:
            fields["source_path"] = str(tool if isinstance(tool, Path) else self.tool(tool))
        return sp.FleetCommand(launch=pb.LaunchRunRequest(run=run or self.run_name(), **fields))

    async def launch(
        self, tool: str | Path | None, run: str | None = None, **fields: Any
    ) -> pb.RunContainer:
        """Launches a tool as a run (see launch_command) and returns its container."""
        return await self.command(self.launch_command(tool, run, **fields))

    @staticmethod
    def stop_command(run: str, grace: float | None = None) -> sp.FleetCommand:
        request = pb.StopRunRequest(run=run)
        if grace is not None:
            request.grace_period.CopyFrom(seconds(grace))
        return sp.FleetCommand(stop=request)

    async def stop(self, run: str, grace: float | None = None) -> pb.RunContainer:
        return await self.command(self.stop_command(run, grace))

    async def get(self, run: str) -> pb.RunContainer:
        return container_to_proto(await self.app.backend.get(RunName.parse(run)))

    async def list(self, include_exited: bool = False) -> builtins.list[pb.RunContainer]:
        found = await self.app.backend.list(include_exited=include_exited)
        return [container_to_proto(c) for c in found]

    async def watch(self, after_sequence: int = 0) -> AsyncIterator[sp.Report]:
        """This orchestrator's container reports (each with its sequence and container)
        applied so far, then new ones."""
        async for report in self.control.follow(self.since):
            if report.HasField("container") and report.sequence > after_sequence:
                yield report

    async def reported(self, run: str) -> builtins.list[pb.RunContainer]:
        """The run's container reports applied so far, once every event the backend has
        logged up to now (at least one) has been reported and applied: none is on its way."""
        last, logged = self.app.events.last_sequence, 0
        async with asyncio.timeout(TIMEOUT), aclosing(self.app.events.subscribe(0)) as events:
            async for event in events:
                logged += 1
                if event.sequence >= last:
                    break

            def containers() -> builtins.list[pb.RunContainer]:
                reports = self.control.reports[self.since :]
                return [r.container for r in reports if r.HasField("container")]

            await self.control.wait_until(lambda: len(containers()) >= logged)
        return [c for c in containers() if c.run == run]

    async def events_of(
        self, run: str, *, until: int = pb.CONTAINER_STATE_EXITED, limit: float = TIMEOUT
    ) -> builtins.list[sp.Report]:
        """The run's events from the start up to the first in state `until`."""
        events: builtins.list[sp.Report] = []
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


async def attach(app: OrchestratorApp, control: HandControl) -> int:
    """Starts `app` and returns once it has registered with `control` and its session is
    open; returns the index of the control's first report that may be the app's."""
    registered, since = len(control.registrations), len(control.reports)
    await app.start()
    await control.wait_registrations(registered + 1, TIMEOUT)
    await timeouts.wait_for(app.link.attached.wait(), TIMEOUT)
    return since


async def serve_module(
    control: HandControl, *args: str, env: Mapping[str, str] | None = None
) -> asyncio.subprocess.Process:
    """Starts ``python -m flnet.orchestrator --control <control> ARGS`` and returns it once it
    has registered with `control` (env: its client at an issuer, tests.identity
    .orchestrator_client_env). The caller ends it."""
    registered = len(control.registrations)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flnet.orchestrator",
        "--control",
        control.address,
        *args,
        env=env,
        stdout=subprocess.PIPE,  # it prints nothing (logs go to stderr)
        stderr=subprocess.PIPE,
    )
    waiting = asyncio.create_task(control.wait_registrations(registered + 1, TIMEOUT))
    exited = asyncio.create_task(process.wait())
    try:
        await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            assert process.stderr is not None
            raise AssertionError(
                "the orchestrator exited before registering: "
                + (await process.stderr.read()).decode()[-2000:]
            )
        await waiting
        return process
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    finally:
        waiting.cancel()
        exited.cancel()


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
