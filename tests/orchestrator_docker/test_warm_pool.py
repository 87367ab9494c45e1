"""The warm pool (docker_pool.py): a launch takes the standby container of its shape, whose
engine was started ahead; the run is confined exactly as in a container of its own; each
standby serves one run, then is removed; what waits is removed at stop, and after a kill -9
a standby never assigned is removed while an assigned one is its run's container."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiodocker

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.orchestrator.docker_container import LABEL_POOL, LABEL_WORKDIR
from tests.auth.issuer import Issuer
from tests.identity import orchestrator_client_env
from tests.orchestrator.hand_control import HandControl
from tests.orchestrator.helpers import TIMEOUT, serve_module
from tests.orchestrator_docker.helpers import DockerOrchestrator, MiB, StartDockerOrchestrator

LIMITS = pb.Limits(memory_bytes=128 * MiB, pids=64, open_files=256, cpu_millis=500)
ENVIRONMENT = {"X_EXTRA": "yes"}
# What the profile comparison reads of `docker inspect`: all of HostConfig that confines.
CONFINING = (
    "NetworkMode", "Init", "ReadonlyRootfs", "CapDrop", "SecurityOpt", "PidsLimit", "Ulimits",
    "Memory", "MemorySwap", "NanoCpus", "RestartPolicy",
)  # fmt: skip


async def standbys(docker: aiodocker.Docker, data_dir: Path) -> list[dict[str, Any]]:
    """The inspected standby containers of the orchestrator over `data_dir`."""
    found = await docker.containers.list(all=True, filters={"label": [LABEL_POOL]})
    infos = [await c.show() for c in found]
    prefix = str(data_dir.resolve()) + "/"
    return [i for i in infos if i["Config"]["Labels"][LABEL_WORKDIR].startswith(prefix)]


async def until_standby(docker: aiodocker.Docker, data_dir: Path, other_than: str = "") -> str:
    """The id of the running standby (another than `other_than`), once there."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            running: list[str] = [
                s["Id"]
                for s in await standbys(docker, data_dir)
                if s["State"]["Running"] and s["Id"] != other_than
            ]
            if running:
                return running[0]
            await asyncio.sleep(0.05)


async def until_gone(docker: aiodocker.Docker, container_id: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                await docker.containers.container(container_id).show()
            except aiodocker.DockerError as exc:
                if exc.status == 404:
                    return
            await asyncio.sleep(0.05)


def workdir_of(info: dict[str, Any]) -> Path:
    return Path(info["Config"]["Labels"][LABEL_WORKDIR])


async def launch(orch: DockerOrchestrator, function: str, **fields: Any) -> pb.RunContainer:
    fields.setdefault("limits", LIMITS)
    fields.setdefault("environment", ENVIRONMENT)
    return await orch.launch_probe(function, **fields)


async def test_a_launch_takes_its_shapes_standby_confined_as_a_container_of_its_own(
    start_orchestrator: StartDockerOrchestrator, docker: aiodocker.Docker
) -> None:
    orch = await start_orchestrator(warm_pool=1, keep_workdirs=True)
    cold = await launch(orch, "observe")
    assert (await orch.exited(cold.run)).exit_code == 0
    standby = await until_standby(docker, orch.data_dir)
    before = await docker.containers.container(standby).show()
    # Waiting, it knows no run and holds no credential.
    assert (
        LABEL_POOL in before["Config"]["Labels"] and "flnet.run" not in before["Config"]["Labels"]
    )
    assert (workdir_of(before) / "credential").read_text() == ""

    warm = await launch(orch, "observe")

    assert warm.container_id == standby
    exited = await orch.exited(warm.run)
    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_EXITED, 0), exited
    # Seen from inside: the same confinement, credential and environment, but for its run
    # (and its own file system: another loop device).
    cold_seen, warm_seen = orch.observations(cold.run), orch.observations_in(workdir_of(before))
    cold_env, warm_env = cold_seen.pop("env"), warm_seen.pop("env")
    assert (cold_env.pop("FLNET_RUN"), warm_env.pop("FLNET_RUN")) == (cold.run, warm.run)
    assert warm_env == cold_env
    for seen in (cold_seen, warm_seen):
        seen["mounts"] = {path: (fs, options) for path, (fs, _, options) in seen["mounts"].items()}
    assert warm_seen == cold_seen
    # Seen from the Docker engine: the same profile; one mount more, the assignment FIFO.
    cold_info = await docker.containers.container(cold.container_id).show()
    warm_info = await docker.containers.container(warm.container_id).show()
    for key in CONFINING:
        assert warm_info["HostConfig"][key] == cold_info["HostConfig"][key], key
    assert warm_info["Config"]["User"] == cold_info["Config"]["User"] == "10001:10001"
    targets = {m["Target"] for m in cold_info["HostConfig"]["Mounts"]}
    assert {m["Target"] for m in warm_info["HostConfig"]["Mounts"]} == targets | {
        "/run/flnet-assignment"
    }
    # A standby serves one run: the next launch gets another.
    assert await until_standby(docker, orch.data_dir, other_than=standby) != standby


async def test_standbys_serve_one_run_their_shape_only_and_leave_at_stop(
    start_orchestrator: StartDockerOrchestrator, docker: aiodocker.Docker
) -> None:
    orch = await start_orchestrator(warm_pool=1)
    first = await launch(orch, "observe")
    await orch.exited(first.run)
    standby = await until_standby(docker, orch.data_dir)

    taken = await launch(orch, "observe")
    assert taken.container_id == standby
    await orch.exited(taken.run)
    await until_gone(docker, standby)  # removed with its run's end, like any container
    # Another shape (other limits) starts a container of its own.
    replacement = await until_standby(docker, orch.data_dir, other_than=standby)
    other = await launch(orch, "observe", limits=pb.Limits(memory_bytes=64 * MiB))
    assert other.container_id != replacement
    await orch.exited(other.run)

    await orch.app.stop()  # the teardown then finds no container and no work dir left
    assert await standbys(docker, orch.data_dir) == []


async def test_after_a_kill_an_idle_standby_is_removed_and_an_assigned_one_is_its_runs(
    start_orchestrator: StartDockerOrchestrator,
    tmp_path: Path,
    test_image: str,
    control_address: str,
    docker: aiodocker.Docker,
    http_issuer: Issuer,
    hand_control: HandControl,
) -> None:
    data_dir = tmp_path / "shared"
    env = {**os.environ, **orchestrator_client_env(http_issuer), "FLNET_WARM_POOL": "1"}
    process = await serve_module(
        hand_control, "--data-dir", str(data_dir), "--backend", "docker", env=env
    )
    request = pb.LaunchRunRequest(
        image_digest=test_image,
        entrypoint="probe.py:wait_for_go",
        control_address=control_address,
        credential="secret-credential-of-the-run",
        limits=LIMITS,
    )
    try:
        for run in ("tenants/acme/runs/cold", "tenants/acme/runs/warm"):
            launched = pb.LaunchRunRequest()
            launched.CopyFrom(request)
            launched.run = run
            result = await hand_control.command(sp.FleetCommand(launch=launched), TIMEOUT)
            assert result.code == 0, result
            if run.endswith("cold"):
                assigned = await until_standby(docker, data_dir)
        assert result.container.container_id == assigned
        idle = await until_standby(docker, data_dir, other_than=assigned)
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()

    orch = await start_orchestrator(data_dir=data_dir)

    await until_gone(docker, idle)
    listed = {c.run: c.container_id for c in await orch.list()}
    assert listed == {
        "tenants/acme/runs/cold": listed["tenants/acme/runs/cold"],
        "tenants/acme/runs/warm": assigned,
    }
    info = await docker.containers.container(assigned).show()
    (workdir_of(info) / "input" / "go").write_text("3")
    (orch.workdir("tenants/acme/runs/cold") / "input" / "go").write_text("0")
    assert (await orch.exited("tenants/acme/runs/warm")).exit_code == 3
    assert (await orch.exited("tenants/acme/runs/cold")).exit_code == 0
