"""Fixtures of the docker backend tests: the real Docker engine (started when it is not
running and we may), a test image built FROM flnet/base:bookworm whose CMD runs probe.py,
a control-plane stand-in on a unix socket, and real OrchestratorApps (backend "docker") on
127.0.0.1:0, talked to through the generated stub.

Without Docker or the base image the tests fail when CI=true and are skipped otherwise.
After each test no container of its data dirs and no work dir may be left."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import aiodocker
import pytest

from flnet.api.orchestrator.v1 import orchestrator_service_pb2_grpc as pb_grpc
from flnet.channels import insecure_channel
from flnet.orchestrator.app import OrchestratorApp
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


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the docker backend tests need Docker: {reason}", pytrace=False)
    pytest.skip(f"Docker is not available: {reason}")


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the classic builder: no buildx here
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def _engine_answers() -> bool:
    return Path(DOCKER_SOCKET).is_socket() and _docker("version", timeout=30).returncode == 0


def _ensure_dockerd(log_dir: Path) -> None:
    if shutil.which("docker") is None:
        _unavailable("no docker command (apt-get install docker.io)")
    if _engine_answers():
        return
    may_start = os.environ.get("CI", "").lower() == "true" or os.geteuid() == 0
    if not may_start or shutil.which("dockerd") is None:
        _unavailable(f"no Docker engine at {DOCKER_SOCKET}")
    log = (log_dir / "dockerd.log").open("ab")
    # Left running after the session, as a service would be.
    subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while not _engine_answers():
        if time.monotonic() > deadline:
            _unavailable(f"dockerd did not answer within 60 s (log: {log_dir / 'dockerd.log'})")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def test_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The id ("sha256:...") of the test image, built FROM flnet/base:bookworm."""
    context = tmp_path_factory.mktemp("image")
    _ensure_dockerd(context)
    if _docker("image", "inspect", BASE_IMAGE).returncode != 0:
        _unavailable(f"no base image {BASE_IMAGE} (see DESIGN.md §9)")
    shutil.copy(PROBE, context / "probe.py")
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=BASE_IMAGE))
    built = _docker("build", "--network", "none", "-q", "-t", TEST_IMAGE, str(context))
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
    """A control-plane stand-in: a unix socket (0666, in its own directory, short path)
    that answers "pong" to a line."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"pong\n")
        await writer.drain()
        writer.close()

    directory = Path(tempfile.mkdtemp(prefix="flnet-ctl-"))
    directory.chmod(0o755)
    path = directory / "control.sock"
    server = await asyncio.start_unix_server(answer, path)
    path.chmod(0o666)
    yield f"unix://{path}"
    server.close()
    await server.wait_closed()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def start_orchestrator(
    tmp_path: Path, test_image: str, control_address: str, docker: aiodocker.Docker
) -> AsyncIterator[StartDockerOrchestrator]:
    """Starts docker-backend orchestrators with OrchestratorApp keyword arguments (default
    kill_grace 1 s; `data_dir` to share one); at teardown stops them, then fails the test
    when a container or work dir is left (unless keep_workdirs asked for that)."""
    started: list[tuple[OrchestratorApp, Any]] = []
    keeping = False

    async def start(data_dir: Path | None = None, **kwargs: Any) -> DockerOrchestrator:
        nonlocal keeping
        data_dir = data_dir or tmp_path / f"data{len(started)}"
        kwargs.setdefault("kill_grace", 1.0)
        kwargs.setdefault("stop_grace", 1.0)
        keeping = keeping or bool(kwargs.get("keep_workdirs"))
        app = OrchestratorApp(data_dir, backend="docker", **kwargs)
        port = await app.start("127.0.0.1:0")
        address = f"127.0.0.1:{port}"
        channel = insecure_channel(address)
        started.append((app, channel))
        return DockerOrchestrator(
            app=app,
            stub=pb_grpc.OrchestratorServiceStub(channel),
            address=address,
            data_dir=data_dir,
            tmp_path=tmp_path,
            image=test_image,
            control_address=control_address,
        )

    yield start
    for app, channel in reversed(started):
        await channel.close()
        await app.stop()
    containers, workdirs = await leftovers(docker, tmp_path)
    for container in containers:
        await container.delete(force=True)
    for workdir in workdirs:
        shutil.rmtree(workdir, ignore_errors=True)
    if not keeping:
        assert not containers, f"containers left: {[c.id[:12] for c in containers]}"
        assert not workdirs, f"work dirs left: {workdirs}"


@pytest.fixture
async def orch(start_orchestrator: StartDockerOrchestrator) -> DockerOrchestrator:
    return await start_orchestrator()
