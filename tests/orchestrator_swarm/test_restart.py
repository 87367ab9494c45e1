"""Restart safety of the swarm backend: services outlive the orchestrator process that
created them; the next one on the same data dir re-attaches the running ones and reports
the ended ones."""

from __future__ import annotations

import asyncio
import signal

import aiodocker

from flnet.orchestrator.backend import ContainerState, ExitCause
from flnet.orchestrator.docker_container import ENGINE_GID, ENGINE_UID, control_socket, labels
from flnet.orchestrator.swarm_service import service_name, service_spec, task_state
from tests.orchestrator_swarm.helpers import TIMEOUT, StartSwarmBackend, Stopwatch, SwarmRuns


def go(runs: SwarmRuns, run_id: str, code: int) -> None:
    """Lets a `wait_for_go` probe exit with `code`."""
    (runs.backend.runs_dir / run_id / "input" / "go").write_text(str(code))


async def test_restart_mid_run_re_attaches_then_reports_the_exit(
    start_backend: StartSwarmBackend,
) -> None:
    first = await start_backend()
    container = await first.launch("wait_for_go")
    run = container.run
    await first.until_ready(run)
    await first.backend.close(1.0, end_engines=False)

    second = await start_backend(first.data_dir)

    attached = await second.state(run, ContainerState.RUNNING)
    assert attached.container_id == container.container_id
    assert attached.backend == "swarm"
    assert [c.run for c in await second.backend.list()] == [run]
    go(second, f"{run.tenant}_{run.run_id}", 4)
    exited = await second.exited(run)
    assert exited.exit_cause is ExitCause.EXITED
    assert exited.exit_code == 4
    assert list(exited.last_output_lines) == ["going"]


async def test_exit_while_no_orchestrator_watched_is_reported_once(
    start_backend: StartSwarmBackend, docker: aiodocker.Docker
) -> None:
    first = await start_backend()
    container = await first.launch("wait_for_go")
    run = container.run
    await first.until_ready(run)
    await first.backend.close(1.0, end_engines=False)
    go(first, f"{run.tenant}_{run.run_id}", 5)
    name = service_name(first.workdir(run), run)
    watch = Stopwatch()
    while task_state((await docker.tasks.list(filters={"service": name}))[0]) != "failed":
        assert watch.elapsed < TIMEOUT
        await asyncio.sleep(0.1)

    second = await start_backend(first.data_dir)

    exited = await second.exited(run)
    assert await second.events_of(run) == [ContainerState.EXITED]
    assert exited.exit_cause is ExitCause.EXITED
    assert exited.exit_code == 5


async def test_deadline_is_re_armed_after_a_restart(start_backend: StartSwarmBackend) -> None:
    first = await start_backend()
    container = await first.launch("sleep", deadline=3.0)
    run = container.run
    await first.until_ready(run)
    await first.backend.close(1.0, end_engines=False)

    second = await start_backend(first.data_dir)

    exited = await second.exited(run)
    assert exited.exit_cause is ExitCause.DEADLINE_EXCEEDED
    assert exited.exit_code == -signal.SIGTERM
    assert container.deadline_time is not None and exited.end_time is not None
    assert exited.end_time >= container.deadline_time


async def test_a_service_whose_launch_never_returned_is_removed_at_start(
    start_backend: StartSwarmBackend, docker: aiodocker.Docker, test_image: str
) -> None:
    # What an orchestrator that died while the swarm placed a run leaves: the run's work
    # dir, secret and service, its task pending (no node takes it); and a secret of a launch
    # that died before its service was made.
    first = await start_backend()
    spec = first.spec("exit3")
    workdir = first.workdir(spec.run)
    name = service_name(workdir, spec.run)
    workdir.prepare("", (ENGINE_UID, ENGINE_GID))
    run_labels = labels(spec.run, workdir, None)
    secret = await docker.secrets.create(name, spec.credential, labels=run_labels)
    body = service_spec(
        spec,
        name=name,
        image=test_image,
        workdir=workdir,
        socket=control_socket(spec.control_address),
        deadline=None,
        host_cpus=1,
        stop_grace=1.0,
        secret_id=secret["ID"],
        constraints=["node.labels.flnet-test-nowhere==true"],
    )
    await docker.services.create(
        body.task_template, name=body.name, labels=body.labels, mode=body.mode
    )
    stray_run = first.run_name()
    stray = service_name(first.workdir(stray_run), stray_run)
    await docker.secrets.create(
        stray, "x", labels=labels(stray_run, first.workdir(stray_run), None)
    )
    await first.backend.close(1.0)

    second = await start_backend(first.data_dir)

    assert not await docker.services.list(filters={"name": name})
    assert not await docker.secrets.list(filters={"name": name})
    assert not await docker.secrets.list(filters={"name": stray})
    assert not workdir.exists()
    assert await second.events_of(spec.run) == []
