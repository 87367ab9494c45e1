"""Restart safety: containers outlive the orchestrator process (SIGKILL, or a stop with
detach_on_stop); the next orchestrator over the same data dir re-attaches running ones (and
lists them in its registration), reports exits that happened meanwhile, re-arms deadlines,
and leaves alone what is not its own."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiodocker

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.orchestrator.docker_disk import RunDisk
from flnet.orchestrator.docker_state import VANISHED_LINE
from flnet.orchestrator.mounts import mounts_under
from flnet.orchestrator.workdir import WorkDir
from tests.auth.issuer import Issuer
from tests.identity import orchestrator_client_env
from tests.orchestrator.hand_control import HandControl
from tests.orchestrator.helpers import TIMEOUT, Stopwatch, seconds, serve_module, wait_for
from tests.orchestrator_docker.helpers import DockerOrchestrator, MiB, StartDockerOrchestrator


async def running(docker: aiodocker.Docker, container_id: str) -> bool:
    info = await docker.containers.container(container_id).show()
    return bool(info["State"]["Running"])


def go(orch: DockerOrchestrator, run: str, code: int) -> None:
    """Lets a `wait_for_go` probe exit with `code`."""
    (orch.workdir(run) / "input" / "go").write_text(str(code))


async def test_a_killed_orchestrators_container_is_re_attached_and_its_exit_reported_once(
    start_orchestrator: StartDockerOrchestrator,
    tmp_path: Path,
    test_image: str,
    control_address: str,
    docker: aiodocker.Docker,
    http_issuer: Issuer,
    hand_control: HandControl,
) -> None:
    data_dir = tmp_path / "shared"
    env = {**os.environ, **orchestrator_client_env(http_issuer)}
    process = await serve_module(
        hand_control, "--data-dir", str(data_dir), "--backend", "docker", env=env
    )
    try:
        assert hand_control.registrations[0].backend == "docker"
        request = pb.LaunchRunRequest(
            run="tenants/acme/runs/survivor",
            image_digest=test_image,
            entrypoint="probe.py:wait_for_go",
            control_address=control_address,
        )
        result = await hand_control.command(sp.FleetCommand(launch=request), TIMEOUT)
        assert result.code == 0, result.message
        launched = result.container
        ready = data_dir / "orchestrator" / "runs" / "acme_survivor" / "output" / "ready"
        await wait_for(ready.exists)
        # Its start reported: nothing of it is on its way when the next orchestrator starts.
        await hand_control.wait_until(
            lambda: any(r.container == launched for r in hand_control.reports), TIMEOUT
        )
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert await running(docker, launched.container_id)  # dockerd owns it
    predecessor = hand_control.acked

    second = await start_orchestrator(data_dir=data_dir)

    listed = await second.list()
    assert [(c.run, c.container_id, c.state) for c in listed] == [
        (launched.run, launched.container_id, pb.CONTAINER_STATE_RUNNING)
    ]
    # Its registration lists it for the control plane.
    assert list(hand_control.registrations[-1].containers) == listed
    # A relaunch returns the re-attached container.
    again = await second.launch_probe("exit3", run=launched.run)
    assert (again.container_id, again.state) == (launched.container_id, pb.CONTAINER_STATE_RUNNING)

    go(second, launched.run, 0)
    exited = await second.exited(launched.run)

    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_EXITED, 0)
    assert list(exited.last_output_lines) == ["going"]
    assert [c.state for c in await second.reported(launched.run)] == [
        pb.CONTAINER_STATE_RUNNING,
        pb.CONTAINER_STATE_EXITED,
    ]
    # Its sequences continue above the killed one's: none was taken for a resend.
    assert all(r.sequence > predecessor for r in hand_control.reports[second.since :])
    # Once the run has ended, nothing of it is left: work dir, file system, container.
    workdir = second.workdir(launched.run)
    await wait_for(lambda: not workdir.exists())
    assert not mounts_under(data_dir)
    await wait_for_removal(docker, launched.container_id)


async def wait_for_removal(docker: aiodocker.Docker, container_id: str) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                await docker.containers.container(container_id).show()
            except aiodocker.DockerError as exc:
                assert exc.status == 404
                return
            await asyncio.sleep(0.05)


async def test_a_detached_container_keeps_its_deadline(
    start_orchestrator: StartDockerOrchestrator,
    docker: aiodocker.Docker,
    hand_control: HandControl,
) -> None:
    deadline, grace = 3.0, 1.0
    first = await start_orchestrator(detach_on_stop=True)
    watch = Stopwatch()
    launched = await first.launch_probe("stubborn", deadline=seconds(deadline))
    await first.until_ready(launched.run)
    await first.app.stop()
    assert await running(docker, launched.container_id)

    second = await start_orchestrator(data_dir=first.data_dir)
    got = await second.get(launched.run)
    assert got.deadline_time == launched.deadline_time
    [registered] = hand_control.registrations[-1].containers
    assert (registered.container_id, registered.state, registered.deadline_time) == (
        launched.container_id,
        pb.CONTAINER_STATE_RUNNING,
        launched.deadline_time,
    )
    exited = await second.exited(launched.run)

    assert exited.exit_cause == pb.EXIT_CAUSE_DEADLINE_EXCEEDED
    assert exited.exit_code == -signal.SIGKILL
    assert deadline + grace - 0.1 <= watch.elapsed <= deadline + grace + 20


async def test_an_exit_while_no_orchestrator_watched_is_reported_with_its_real_code(
    start_orchestrator: StartDockerOrchestrator, docker: aiodocker.Docker
) -> None:
    first = await start_orchestrator(detach_on_stop=True)
    launched = await first.launch_probe("wait_for_go")
    await first.until_ready(launched.run)
    await first.app.stop()
    go(first, launched.run, 5)
    await docker.containers.container(launched.container_id).wait()

    second = await start_orchestrator(data_dir=first.data_dir)
    exited = await second.exited(launched.run)

    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_EXITED, 5)
    assert list(exited.last_output_lines) == ["going"]
    assert exited.container_id == launched.container_id
    # Reported, not re-announced as running.
    assert [c.state for c in await second.reported(launched.run)] == [pb.CONTAINER_STATE_EXITED]


async def test_a_stop_decided_before_the_restart_keeps_its_cause(
    start_orchestrator: StartDockerOrchestrator, docker: aiodocker.Docker
) -> None:
    first = await start_orchestrator(detach_on_stop=True)
    launched = await first.launch_probe("sleep")
    await first.until_ready(launched.run)
    await first.app.stop()
    # As an orchestrator dying right after its deadline timer sent SIGTERM leaves it.
    (first.workdir(launched.run) / "stop-cause").write_text("DEADLINE_EXCEEDED")
    container = docker.containers.container(launched.container_id)
    await container.kill(signal="SIGTERM")
    await container.wait()

    second = await start_orchestrator(data_dir=first.data_dir)
    exited = await second.exited(launched.run)

    assert exited.exit_cause == pb.EXIT_CAUSE_DEADLINE_EXCEEDED
    assert exited.exit_code == -signal.SIGTERM


async def test_a_kept_container_is_replaced_by_a_relaunch(
    start_orchestrator: StartDockerOrchestrator,
) -> None:
    first = await start_orchestrator(keep_workdirs=True)
    launched = await first.launch_probe("exit3")
    await first.exited(launched.run)
    await first.app.stop()

    second = await start_orchestrator(data_dir=first.data_dir, keep_workdirs=True)
    assert not await second.list()
    again = await second.launch_probe("lines", run=launched.run)

    assert again.container_id != launched.container_id
    exited = await second.exited(launched.run)
    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_EXITED, 0)


async def test_reconciliation_leaves_others_alone_and_reports_orphan_work_dirs(
    start_orchestrator: StartDockerOrchestrator,
    tmp_path: Path,
    test_image: str,
    docker: aiodocker.Docker,
) -> None:
    data_dir = tmp_path / "data"
    runs = data_dir.resolve() / "orchestrator" / "runs"

    async def create(run: str, workdir: Path) -> str:
        config: dict[str, Any] = {
            "Image": test_image,
            "Labels": {"flnet.managed": "true", "flnet.run": run, "flnet.workdir": str(workdir)},
            "HostConfig": {"NetworkMode": "none"},
        }
        return (await docker.containers.create(config)).id

    # Another orchestrator's (another data dir), and ours whose work dir is gone.
    foreign = await create("tenants/acme/runs/f", Path("/elsewhere/runs/acme_f"))
    workless = await create("tenants/acme/runs/w", runs / "acme_w")
    # A work dir whose container was removed while no orchestrator watched.
    orphan = runs / "acme_orphan"
    (orphan / "output").mkdir(parents=True)
    (orphan / "credential").write_text("secret")
    # One of an orchestrator killed between making the run's file system and its container.
    unlaunched = WorkDir(runs / "acme_unlaunched")
    unlaunched.prepare("secret")
    RunDisk(unlaunched).create(8 * MiB, (os.getuid(), os.getgid()))
    assert mounts_under(unlaunched.path)
    try:
        orch = await start_orchestrator(data_dir=data_dir)

        exited = await orch.exited("tenants/acme/runs/orphan")
        assert (exited.exit_cause, exited.container_id) == (pb.EXIT_CAUSE_VANISHED, "")
        assert list(exited.last_output_lines) == [VANISHED_LINE]
        await wait_for(lambda: not orphan.exists())  # its clean-up follows the event
        exited = await orch.exited("tenants/acme/runs/unlaunched")
        assert exited.exit_cause == pb.EXIT_CAUSE_VANISHED
        await wait_for(lambda: not unlaunched.path.exists())
        assert not mounts_under(runs)
        for container_id in (foreign, workless):
            info = await docker.containers.container(container_id).show()
            assert info["State"]["Status"] == "created"  # untouched
    finally:
        for container_id in (foreign, workless):
            await docker.containers.container(container_id).delete(force=True)
