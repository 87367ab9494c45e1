"""Fixtures of the docker backend tests: the real Docker engine (started when it is not
running and we may), a test image built FROM flnet/base:bookworm whose CMD runs probe.py,
a control-plane stand-in on a unix socket for the engines (laid out as the control plane
lays out its own for the docker backend's engines), and real OrchestratorApps (backend
"docker") attached to the test's own control-plane side of the session (HandControl).

Without Docker or the base image the tests fail when CI=true and are skipped otherwise.
After each test no container of its data dirs, no work dir and no mount may be left."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from flnet.control import engine_socket
from flnet.orchestrator.app import OrchestratorApp
from flnet.orchestrator.docker_container import ENGINE_GID
from flnet.orchestrator.mounts import detach_all_under, mounts_under
from flnet.orchestrator.workdir import WorkDir
from tests.docker_env import docker as docker_cli
from tests.docker_env import require_base_image
from tests.identity import orchestrator_token
from tests.orchestrator.hand_control import HandControl
from tests.orchestrator.helpers import ORCHESTRATOR_IDENTITY, attach
from tests.orchestrator_docker.helpers import (
    BASE_IMAGE,
    DOCKER_SOCKET,
    TEST_IMAGE,
    DockerOrchestrator,
    StartDockerOrchestrator,
    leftovers,
)

PROBE = Path(__file__).with_name("probe.py")
DOCKERFILE = """\
FROM {base}
COPY probe.py /opt/tool/probe.py
CMD ["python3", "/opt/tool/probe.py"]
"""


@pytest.fixture(scope="session")
def test_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The id ("sha256:...") of the test image, built FROM flnet/base:bookworm."""
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
async def hand_control() -> AsyncIterator[HandControl]:
    """The control plane's side of the orchestrators' sessions, played by the test."""
    control = HandControl()
    await control.start()
    yield control
    await control.stop()


@pytest.fixture
async def start_orchestrator(
    tmp_path: Path,
    test_image: str,
    control_address: str,
    docker: aiodocker.Docker,
    hand_control: HandControl,
) -> AsyncIterator[StartDockerOrchestrator]:
    """Starts docker-backend orchestrators with OrchestratorApp keyword arguments (default
    kill_grace 1 s; `data_dir` to share one), each attached to the test's HandControl; at
    teardown stops them, then fails the test when a container or work dir is left (unless
    keep_workdirs asked for that)."""
    started: list[OrchestratorApp] = []
    keeping = False

    async def start(data_dir: Path | None = None, **kwargs: Any) -> DockerOrchestrator:
        nonlocal keeping
        data_dir = data_dir or tmp_path / f"data{len(started)}"
        kwargs.setdefault("kill_grace", 1.0)
        kwargs.setdefault("token", orchestrator_token)
        kwargs.setdefault("identity", ORCHESTRATOR_IDENTITY)
        keeping = keeping or bool(kwargs.get("keep_workdirs"))
        app = OrchestratorApp(
            data_dir, backend="docker", control_address=hand_control.address, **kwargs
        )
        started.append(app)
        since = await attach(app, hand_control)
        return DockerOrchestrator(
            app=app,
            control=hand_control,
            data_dir=data_dir,
            tmp_path=tmp_path,
            since=since,
            image=test_image,
            control_address=control_address,
        )

    yield start
    for app in reversed(started):
        await app.stop()
    containers, workdirs = await leftovers(docker, tmp_path)
    mounted = mounts_under(tmp_path)
    for container in containers:
        await container.delete(force=True)
    for workdir in workdirs:
        WorkDir(workdir).remove()  # its file system's mounts first
    detach_all_under(tmp_path)
    if not keeping:
        assert not containers, f"containers left: {[c.id[:12] for c in containers]}"
        assert not workdirs, f"work dirs left: {workdirs}"
        assert not mounted, f"mounts left: {mounted}"


@pytest.fixture
async def orch(start_orchestrator: StartDockerOrchestrator) -> DockerOrchestrator:
    return await start_orchestrator()
