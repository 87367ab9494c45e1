"""Helpers of the swarm backend tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiodocker

from flnet import timeouts
from flnet.orchestrator.backend import (
    Container,
    ContainerEvent,
    ContainerState,
    Image,
    LaunchSpec,
    Limits,
    RunName,
)
from flnet.orchestrator.docker_container import LABEL_MANAGED, LABEL_WORKDIR
from flnet.orchestrator.events import EventLog
from flnet.orchestrator.swarm_backend import SwarmBackend
from flnet.orchestrator.workdir import WorkDir

# Generous: a loaded 2-core machine, and swarm tasks start slower than containers.
TIMEOUT = 60.0
MiB = 1024 * 1024
BASE_IMAGE = "flnet/base:bookworm"
# The docker backend tests' image (tests/orchestrator_docker/probe.py as its CMD).
TEST_IMAGE = "flnet/test-probe:latest"
DOCKER_SOCKET = "/var/run/docker.sock"
CREDENTIAL = "secret-credential-of-the-run"


class Stopwatch:
    def __init__(self) -> None:
        self._start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start


async def wait_for(condition: Callable[[], bool]) -> None:
    """Polls a condition the test cannot await otherwise (a file a container writes)."""
    async with asyncio.timeout(TIMEOUT):
        while not condition():  # noqa: ASYNC110 - no event to await across processes
            await asyncio.sleep(0.05)


@dataclass
class SwarmRuns:
    """A started swarm backend whose runs execute probe.py's functions."""

    backend: SwarmBackend
    events: EventLog
    data_dir: Path
    image: str
    control_address: str
    _seen: list[ContainerEvent] = field(default_factory=list)

    @staticmethod
    def run_name(tenant: str = "acme") -> RunName:
        return RunName(tenant, f"run-{uuid.uuid4().hex[:12]}")

    def spec(
        self,
        function: str,
        run: RunName | None = None,
        *,
        limits: Limits | None = None,
        deadline: float | None = None,
        environment: Mapping[str, str] | None = None,
        image: str | None = None,
    ) -> LaunchSpec:
        return LaunchSpec(
            run=run or self.run_name(),
            artifact=Image(image or self.image),
            entrypoint=f"probe.py:{function}",
            control_address=self.control_address,
            credential=CREDENTIAL,
            limits=limits or Limits(),
            deadline=deadline,
            environment=environment or {},
        )

    async def launch(self, function: str, run: RunName | None = None, **fields: Any) -> Container:
        return await self.backend.launch(self.spec(function, run, **fields))

    def workdir(self, run: RunName) -> WorkDir:
        return WorkDir.of(self.backend.runs_dir, run)

    async def until_ready(self, run: RunName) -> None:
        """Until the probe wrote "ready" to its output dir (functions that wait do)."""
        ready = self.workdir(run).output / "ready"
        await wait_for(ready.exists)

    async def state(self, run: RunName, state: ContainerState) -> Container:
        """The run's first event in `state` (replayed or awaited)."""

        async def find() -> Container:
            async with contextlib.aclosing(self.backend.events()) as events:
                async for event in events:
                    if event.container.run == run and event.container.state is state:
                        return event.container
            raise AssertionError("the event log closed")

        return await timeouts.wait_for(find(), TIMEOUT)

    async def exited(self, run: RunName) -> Container:
        return await self.state(run, ContainerState.EXITED)

    async def events_of(self, run: RunName) -> list[ContainerState]:
        """The states of the run's events so far."""
        states: list[ContainerState] = []
        async with contextlib.aclosing(self.backend.events()) as events:
            while True:
                try:
                    event = await timeouts.wait_for(anext(events), 0.2)
                except TimeoutError:
                    return states
                if event.container.run == run:
                    states.append(event.container.state)


class StartSwarmBackend(Protocol):
    """The `start_backend` fixture: a data dir to share one, SwarmBackend keyword
    arguments."""

    async def __call__(self, data_dir: Path | None = None, **kwargs: Any) -> SwarmRuns: ...


@dataclass
class Leftovers:
    """What runs of data dirs below a root left on the engine and disk."""

    services: list[str]
    secrets: list[str]
    containers: list[str]
    workdirs: list[Path]

    def __bool__(self) -> bool:
        return bool(self.services or self.secrets or self.containers or self.workdirs)


async def leftovers(docker: aiodocker.Docker, root: Path) -> Leftovers:
    """Services, secrets and containers of ours whose work dir lies below `root`, and work
    dirs below it."""
    prefix = str(root.resolve()) + "/"
    label = {"label": f"{LABEL_MANAGED}=true"}

    def below(labels: Mapping[str, str] | None) -> bool:
        return (labels or {}).get(LABEL_WORKDIR, "").startswith(prefix)

    services = [
        s["Spec"]["Name"]
        for s in await docker.services.list(filters=label)
        if below(s["Spec"].get("Labels"))
    ]
    secrets = [
        s["Spec"]["Name"]
        for s in await docker.secrets.list(filters=label)
        if below(s["Spec"].get("Labels"))
    ]
    found = await docker.containers.list(all=True, filters=json.dumps({"label": [label["label"]]}))
    containers = [c.id for c in found if below(c["Labels"])]
    workdirs = sorted(root.glob("*/orchestrator/runs/*"))
    return Leftovers(services, secrets, containers, workdirs)
