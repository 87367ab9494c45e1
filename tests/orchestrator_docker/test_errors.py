"""Launch commands the docker backend refuses, with their results' status codes, ErrorInfo
reasons, field violations and messages; and an unreachable Docker engine at start."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import aiodocker
import grpc
import pytest
from aiohttp import web

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.orchestrator.app import OrchestratorApp
from flnet.orchestrator.backend import RunName
from flnet.orchestrator.docker_container import container_name
from flnet.orchestrator.workdir import WorkDir, runs_dir
from tests.identity import orchestrator_token
from tests.orchestrator.hand_control import HandControl
from tests.orchestrator.helpers import ORCHESTRATOR_IDENTITY, CommandFailed, Orchestrator, attach
from tests.orchestrator_docker.helpers import DockerOrchestrator, MiB


async def launch_error(orch: DockerOrchestrator, **fields: Any) -> CommandFailed:
    fields.setdefault("run", orch.run_name())
    fields.setdefault("control_address", orch.control_address)
    if "source_path" not in fields:
        fields.setdefault("image_digest", orch.image)
    with pytest.raises(CommandFailed) as info:
        await orch.launch(None, **fields)
    return info.value


async def test_image_missing_on_the_engine_is_not_found(orch: DockerOrchestrator) -> None:
    missing = "sha256:" + "0" * 64
    error = await launch_error(orch, image_digest=missing)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.message == f"image {missing} is not on this Docker engine"
    assert error.details == ("IMAGE_NOT_FOUND", [])


@pytest.mark.parametrize(
    ("fields", "reason", "field", "message"),
    [
        (
            {"source_path": "/opt/tool"},
            "SOURCE_NOT_SUPPORTED",
            "source_path",
            "docker backend runs images only",
        ),
        (
            {"image_digest": "flnet/test-probe:latest"},
            "IMAGE_DIGEST_INVALID",
            "image_digest",
            "is not an image id 'sha256:<64 hex digits>'",
        ),
        (
            {"control_address": "127.0.0.1:50051"},
            "CONTROL_ADDRESS_INVALID",
            "control_address",
            "containers reach the control plane through a unix socket only",
        ),
        (
            {"control_address": "unix://relative/control.sock"},
            "CONTROL_ADDRESS_INVALID",
            "control_address",
            "is not 'unix:///absolute/path/to/socket'",
        ),
        (
            {"control_address": "unix:///nonexistent-flnet-dir/control.sock"},
            "CONTROL_ADDRESS_INVALID",
            "control_address",
            "the socket's directory '/nonexistent-flnet-dir' does not exist",
        ),
        (
            {"limits": pb.Limits(memory_bytes=MiB)},
            "LIMITS_INVALID",
            "limits.memory_bytes",
            "must be 0 (unlimited) or at least 6291456 bytes",
        ),
    ],
)
async def test_bad_launch_requests_are_invalid_arguments(
    orch: DockerOrchestrator, fields: dict[str, object], reason: str, field: str, message: str
) -> None:
    error = await launch_error(orch, **fields)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details == (reason, [field])
    assert error.message.startswith(f"{field}: ")
    assert message in error.message


@pytest.mark.parametrize(
    ("folder_mode", "socket_mode", "refused"),
    [
        (0o700, 0o660, "may not enter the socket's folder"),  # no engine group: this user's
        (0o710, 0o640, "may not connect to the socket"),
    ],
)
async def test_a_socket_the_engine_may_not_use_fails_the_launch(
    orch: DockerOrchestrator, folder_mode: int, socket_mode: int, refused: str
) -> None:
    """Rather than a run that waits for its engine until CONNECT_TIMEOUT."""
    socket = Path(orch.control_address.removeprefix("unix://"))
    socket.chmod(socket_mode)
    socket.parent.chmod(folder_mode)
    error = await launch_error(orch)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details == ("CONTROL_ADDRESS_INVALID", ["control_address"])
    assert f"the engine's user (10001:10001) {refused}" in error.message
    assert "start the control plane with FLNET_ENGINE_GID=10001" in error.message


async def test_no_socket_while_the_control_plane_restarts_is_no_error(
    orch: DockerOrchestrator,
) -> None:
    """Its folder is what the container gets: the engine finds the new socket there."""
    Path(orch.control_address.removeprefix("unix://")).unlink()
    container = await orch.launch_probe("observe")
    exited = await orch.exited(container.run)
    assert exited.exit_code == 0, exited.last_output_lines


async def test_a_name_taken_by_a_foreign_container_fails_the_launch(
    orch: DockerOrchestrator, docker: aiodocker.Docker
) -> None:
    run = RunName.parse(orch.run_name())
    name = container_name(WorkDir.of(runs_dir(orch.data_dir), run), run)
    foreign = await docker.containers.create({"Image": orch.image}, name=name)
    try:
        error = await launch_error(orch, run=str(run))
    finally:
        await foreign.delete(force=True)
    assert error.code == grpc.StatusCode.INTERNAL
    assert error.details == ("LAUNCH_FAILED", [])
    assert error.message.startswith("cannot start the container: Conflict.")
    # Nothing of the attempt is left (the fixture checks the work dir), nothing listed.
    assert not await orch.list(include_exited=True)


async def test_a_work_dir_that_cannot_be_made_fails_the_launch(orch: DockerOrchestrator) -> None:
    runs = runs_dir(orch.data_dir)
    runs.parent.mkdir(parents=True)
    runs.write_text("not a directory")

    error = await launch_error(orch)

    assert error.code == grpc.StatusCode.INTERNAL
    assert error.details == ("LAUNCH_FAILED", [])
    assert error.message == "cannot prepare the work dir: Not a directory"


async def test_launches_are_unavailable_while_the_docker_engine_is_gone(
    tmp_path: Path, hand_control: HandControl
) -> None:
    # A stand-in engine answers what the start asks, then goes away.
    async def answer(payload: object, _: web.Request) -> web.Response:
        return web.json_response(payload)

    fake = web.Application()
    for path, payload in (
        ("/version", {"ApiVersion": "1.41"}),
        ("/v1.41/info", {"NCPU": 1}),
        ("/v1.41/containers/json", []),
    ):
        fake.router.add_get(path, functools.partial(answer, payload))
    runner = web.AppRunner(fake)
    await runner.setup()
    directory = Path(tempfile.mkdtemp(prefix="flnet-fake-"))
    directory.chmod(0o711)  # also the control socket's folder: the engine may enter it
    await web.UnixSite(runner, str(directory / "docker.sock")).start()
    app = docker_app(tmp_path, hand_control, f"unix://{directory}/docker.sock")
    try:
        await attach(app, hand_control)
        await runner.cleanup()
        orch = Orchestrator(app=app, control=hand_control, data_dir=tmp_path, tmp_path=tmp_path)
        with pytest.raises(CommandFailed) as info:
            await orch.launch(
                None,
                "tenants/acme/runs/r",
                image_digest="sha256:" + "0" * 64,
                control_address=f"unix://{directory}/control.sock",
            )
    finally:
        await app.stop()
        shutil.rmtree(directory, ignore_errors=True)
    error = info.value
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.details == ("DOCKER_UNAVAILABLE", [])
    assert error.message == "cannot inspect the image: the Docker engine is unreachable"


async def test_an_unreachable_docker_engine_fails_the_start(
    tmp_path: Path, hand_control: HandControl
) -> None:
    app = docker_app(tmp_path, hand_control, f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(OSError, match="cannot reach the Docker engine at unix://"):
        await app.start()
    await app.stop()
    assert not hand_control.registrations  # it never attached


def test_the_docker_url_must_be_a_unix_socket(tmp_path: Path, hand_control: HandControl) -> None:
    with pytest.raises(ValueError, match=r"is not 'unix:///path/to/docker\.sock'"):
        docker_app(tmp_path, hand_control, "tcp://127.0.0.1:2375")


def docker_app(tmp_path: Path, control: HandControl, docker_url: str) -> OrchestratorApp:
    """A docker-backend app over `docker_url`, to attach to `control`."""
    return OrchestratorApp(
        tmp_path,
        backend="docker",
        docker_url=docker_url,
        control_address=control.address,
        token=orchestrator_token,
        identity=ORCHESTRATOR_IDENTITY,
    )
