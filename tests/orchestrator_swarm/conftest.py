"""Fixtures of the swarm backend tests: a one-node Docker Swarm on the local engine (made a
manager when it is in no swarm; left active: plain containers do not mind), the docker
backend tests' image (their probe.py as CMD, FROM flnet/base:bookworm), a control-plane
stand-in on a unix socket laid out as the control plane lays out its own, and swarm backends
driven directly through the Backend protocol.

Without Docker or the base image the tests fail when CI=true and are skipped otherwise.
After each test no service, secret, container or work dir of its data dirs may be left."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from flnet.control import engine_socket
from flnet.orchestrator.backend import Backend
from flnet.orchestrator.backends import BackendOptions, make_backend
from flnet.orchestrator.docker_container import ENGINE_GID
from flnet.orchestrator.events import EventLog
from flnet.orchestrator.swarm_backend import SwarmBackend
from flnet.orchestrator.workdir import WorkDir
from tests.docker_env import docker as docker_cli
from tests.docker_env import require_base_image, require_docker, unavailable
from tests.orchestrator_swarm.helpers import (
    BASE_IMAGE,
    DOCKER_SOCKET,
    TEST_IMAGE,
    StartSwarmBackend,
    SwarmRuns,
    leftovers,
)

PROBE = Path(__file__).parent.parent / "orchestrator_docker" / "probe.py"
DOCKERFILE = """\
FROM {base}
COPY probe.py /opt/tool/probe.py
CMD ["python3", "/opt/tool/probe.py"]
"""
# The swarm removes the containers of a removed service a moment later (the backend removes
# them at once on its own node): how long the leftover check waits for that.
_CONTAINERS_GONE = 15.0


@pytest.fixture(scope="session")
def swarm() -> str:
    """The local engine as an active Swarm manager; its node id."""
    require_docker()
    state = docker_cli("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()
    if state != "active":
        made = docker_cli("swarm", "init", "--advertise-addr", "127.0.0.1", check=False)
        if made.returncode != 0:
            unavailable(f"cannot make the engine a swarm manager: {made.stderr.strip()}")
    node = docker_cli("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
    manager = docker_cli("info", "--format", "{{.Swarm.ControlAvailable}}").stdout.strip()
    if manager != "true":
        unavailable(f"the engine is in a swarm, node {node}, but not as a manager")
    return node


@pytest.fixture(scope="session")
def test_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The id ("sha256:...") of the probe image, built FROM flnet/base:bookworm."""
    context = tmp_path_factory.mktemp("image")
    require_base_image()
    shutil.copy(PROBE, context / "probe.py")
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=BASE_IMAGE))
    built = docker_cli(
        "build", "--network", "none", "-q", "-t", TEST_IMAGE, str(context), check=False
    )
    if built.returncode != 0:
        pytest.fail(f"cannot build the test image: {built.stderr}", pytrace=False)
    return built.stdout.strip().splitlines()[-1]


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker(url=f"unix://{DOCKER_SOCKET}")
    yield client
    await client.close()


@pytest.fixture
async def control_address() -> AsyncIterator[str]:
    """A control-plane stand-in: a unix socket in its own directory (short path) that answers
    "pong" to a line, open to the engines' group only as the control plane's is with
    FLNET_ENGINE_GID=10001: directory 0710, socket 0660."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"pong\n")
        await writer.drain()
        writer.close()

    directory = Path(tempfile.mkdtemp(prefix="flnet-ctl-"))
    path = directory / "control.sock"
    engine_socket.prepare_folder(path, ENGINE_GID)
    server = await asyncio.start_unix_server(answer, path)
    engine_socket.restrict_socket(path, ENGINE_GID)
    yield f"unix://{path}"
    server.close()
    await server.wait_closed()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def start_backend(
    swarm: str,
    tmp_path: Path,
    test_image: str,
    control_address: str,
    docker: aiodocker.Docker,
) -> AsyncIterator[StartSwarmBackend]:
    """Starts swarm backends through the registry (default kill_grace 1 s; `data_dir` to
    share one; `constraints`; other SwarmBackend arguments bypass the registry); at teardown
    closes them (ending their runs), then fails the test when a service, secret, container
    or work dir is left (unless keep_workdirs asked for that)."""
    started: list[tuple[SwarmBackend, EventLog]] = []
    keeping = False

    async def start(data_dir: Path | None = None, **kwargs: Any) -> SwarmRuns:
        nonlocal keeping
        data_dir = data_dir or tmp_path / f"data{len(started)}"
        options = BackendOptions(
            data_dir=data_dir,
            engine_command=None,
            kill_grace=kwargs.pop("kill_grace", 1.0),
            keep_workdirs=kwargs.pop("keep_workdirs", False),
            docker_url=f"unix://{DOCKER_SOCKET}",
            swarm_constraints=tuple(kwargs.pop("constraints", ())),
        )
        keeping = keeping or options.keep_workdirs
        events = EventLog()
        if kwargs:  # what the registry's options do not hold
            backend: Backend = SwarmBackend(
                data_dir,
                events,
                docker_url=options.docker_url,
                kill_grace=options.kill_grace,
                keep_workdirs=options.keep_workdirs,
                constraints=options.swarm_constraints,
                **kwargs,
            )
        else:
            backend = make_backend("swarm", events, options)
        assert isinstance(backend, SwarmBackend)
        await backend.start()
        started.append((backend, events))
        return SwarmRuns(
            backend=backend,
            events=events,
            data_dir=data_dir,
            image=test_image,
            control_address=control_address,
        )

    yield start
    for backend, events in reversed(started):
        await backend.close(1.0)
        events.close()
    left = await leftovers(docker, tmp_path)
    give_up = time.monotonic() + _CONTAINERS_GONE
    while left.containers and not left.services and time.monotonic() < give_up:
        await asyncio.sleep(0.2)
        left = await leftovers(docker, tmp_path)
    for service in left.services:
        await docker.services.delete(service)
    for secret in left.secrets:
        await docker.secrets.delete(secret)
    for container in left.containers:
        await docker.containers.container(container).delete(force=True)
    for workdir in left.workdirs:
        WorkDir(workdir).remove()
    if not keeping:
        assert not left, f"left behind: {left}"


@pytest.fixture
async def runs(start_backend: StartSwarmBackend) -> SwarmRuns:
    return await start_backend()
