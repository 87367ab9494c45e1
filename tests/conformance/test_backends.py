"""One conformance suite, every backend (process, docker, swarm): the same runs through the
whole platform (a control plane, an orchestrator of that backend attached to it as a process
of its own, real engines) end the same way: FINISHED, OOM_KILLED, DEADLINE_EXCEEDED,
CANCELLED, and FINISHED across a kill -9 of the orchestrator mid-run.

Docker and Swarm need a Docker engine, the base image and (swarm) an active one-node swarm:
without them the docker and swarm cases fail when CI=true and are skipped otherwise."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flnet import images, lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.cli.stack import wait_log_line
from flnet.control.app import ControlApp
from flnet.orchestrator.docker_container import ENGINE_GID
from flnet.orchestrator.link import ATTACHED_LINE
from flnet.toolspec import load_tool_spec
from tests.auth.issuer import Issuer
from tests.conftest import TENANT, Clients, clients_for, control_app, control_settings
from tests.docker_env import docker as docker_cli
from tests.docker_env import require_base_image, unavailable
from tests.identity import IDENTITY, orchestrator_client_env
from tests.integration.conftest import BEHAVE, Stack, all_events

S = lc.RunState
BACKENDS = ["process", "docker", "swarm"]
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def behave_image() -> images.BuiltImage:
    require_base_image()
    spec = load_tool_spec(BEHAVE)
    assert spec.image_build is not None
    return asyncio.run(
        images.build_tool_image(
            spec.image_build.context,
            name=spec.name,
            version=spec.version.version,
            entrypoint=spec.entrypoint,
        )
    )


def require_swarm() -> None:
    state = docker_cli("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state != "active":
        made = docker_cli("swarm", "init", "--advertise-addr", "127.0.0.1", check=False)
        if made.returncode != 0:
            unavailable(f"cannot make the engine a swarm manager: {made.stderr.strip()}")


@dataclass
class Platform:
    stack: Stack
    control: ControlApp
    backend: str
    data: Path
    issuer: Issuer
    image: images.BuiltImage | None
    orchestrator: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> Clients:
        return self.stack.api

    def start_orchestrator(self) -> None:
        """`python -m flnet.orchestrator` of the backend, attached to the control plane."""
        log = self.data / "orchestrator.log"
        self._attached_from = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.orchestrator = subprocess.Popen(
                [sys.executable, "-m", "flnet.orchestrator", "--name", self.backend,
                 "--control", f"127.0.0.1:{self.control.port}", "--data-dir", str(self.data),
                 "--backend", self.backend, "--kill-grace", "2"],
                stdout=out, stderr=out, env={**os.environ, **orchestrator_client_env(self.issuer)},
            )  # fmt: skip

    async def attached(self) -> None:
        await wait_log_line(self.data / "orchestrator.log", ATTACHED_LINE, self._attached_from, 60)

    def kill_orchestrator(self) -> None:
        assert self.orchestrator is not None
        self.orchestrator.send_signal(signal.SIGKILL)
        self.orchestrator.wait()

    def stop_orchestrator(self) -> None:
        if self.orchestrator is not None and self.orchestrator.poll() is None:
            self.orchestrator.send_signal(signal.SIGTERM)
            try:
                self.orchestrator.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.orchestrator.kill()
                self.orchestrator.wait()

    async def register(self, name: str, deadline: float = 0, **resources: int) -> str:
        spec = load_tool_spec(BEHAVE)
        if self.image is None:
            version = await self.api.with_source(spec)
        else:
            version = spec.with_image(self.image.reference, self.image.digest)
        for field, value in resources.items():
            setattr(version.resources, field, value)
        if deadline:
            version.timeouts.deadline.FromNanoseconds(int(deadline * 1e9))
        res = await self.api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(parent=f"{TENANT}/tools/{name}", tool_version=version)
        )
        return res.tool_version.name


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param != "process":
        require_base_image()
    if request.param == "swarm":
        require_swarm()
    yield request.param


@pytest.fixture
def image(backend: str, request: pytest.FixtureRequest) -> images.BuiltImage | None:
    """The behave tool's image for the container backends (built once per session)."""
    if backend == "process":
        return None
    built: images.BuiltImage = request.getfixturevalue("behave_image")
    return built


@pytest.fixture
async def platform(
    backend: str, image: images.BuiltImage | None, tmp_path: Path, http_issuer: Issuer
) -> AsyncIterator[Platform]:
    settings = control_settings(
        tmp_path,
        auth=IDENTITY.settings(issuer=http_issuer.url),
        engine_gid=ENGINE_GID if backend != "process" else None,
    )
    control = control_app(settings)
    await control.start("127.0.0.1:0")
    api = clients_for(f"127.0.0.1:{control.port}", IDENTITY.token(issuer=http_issuer.url))
    data = tmp_path / "orchestrator"
    data.mkdir()
    platform = Platform(Stack(api, control, None), control, backend, data, http_issuer, image)  # type: ignore[arg-type]
    platform.start_orchestrator()
    try:
        await platform.attached()
        yield platform
    finally:
        platform.stop_orchestrator()
        await api.channel.close()
        await control.stop(0.5)


async def test_a_run_finishes(platform: Platform) -> None:
    version = await platform.register("behave")
    run = await platform.stack.submit(version, mode="finish", lines=20)
    done = await platform.stack.wait_state(run.name, within=120)
    assert done.state == S.RUN_STATE_FINISHED, done.error
    assert [o.output_name for o in done.outputs] == ["result"]
    assert done.orchestrator == f"orchestrators/{platform.backend}"


async def test_a_run_over_its_memory_is_oom_killed(platform: Platform) -> None:
    version = await platform.register("behave-small", memory_bytes=256 * MiB)
    run = await platform.stack.submit(version, mode="allocate", megabytes=2048)
    done = await platform.stack.wait_state(run.name, within=120)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_OOM_KILLED, done.error


async def test_a_run_past_its_deadline_is_stopped(platform: Platform) -> None:
    version = await platform.register("behave-deadline", deadline=4)
    run = await platform.stack.submit(version, mode="sleep", seconds=120)
    done = await platform.stack.wait_state(run.name, within=120)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_DEADLINE_EXCEEDED, done.error


async def test_a_cancelled_run_is_cancelled(platform: Platform) -> None:
    version = await platform.register("behave")
    run = await platform.stack.submit(version, mode="sleep", seconds=120)
    await platform.stack.wait_state(run.name, S.RUN_STATE_RUNNING, within=120)
    await platform.api.runs.CancelRun(rs.CancelRunRequest(name=run.name, reason="enough"))
    done = await platform.stack.wait_state(run.name, within=60)
    assert done.state == S.RUN_STATE_CANCELLED
    assert done.cancellation.reason == "enough"


async def test_a_run_outlives_a_kill_9_of_its_orchestrator(platform: Platform) -> None:
    """The engine goes on; the orchestrator started again takes its container over and the
    run finishes, recorded once."""
    version = await platform.register("behave")
    run = await platform.stack.submit(version, mode="sleep", seconds=6)
    await platform.stack.wait_state(run.name, S.RUN_STATE_RUNNING, within=120)
    platform.kill_orchestrator()
    await asyncio.sleep(1.0)
    platform.start_orchestrator()
    await platform.attached()
    done = await platform.stack.wait_state(run.name, within=120)
    assert done.state == S.RUN_STATE_FINISHED, done.error
    events = await all_events(platform.api, run.name)
    ends = [e for e in events if lifecycle.is_terminal(e.state_change.to_state)]
    assert len(ends) == 1
