"""Launch, exit classification (exit code, OOM, deadline, StopRun, removal behind our back),
idempotency and refused launches of the swarm backend, on a real one-node swarm."""

from __future__ import annotations

import re
import signal

import aiodocker
import pytest

from flnet.errors import NotFound
from flnet.orchestrator.backend import ContainerState, ExitCause, Limits
from flnet.orchestrator.swarm_service import SERVICE_VANISHED_LINE, service_name
from tests.orchestrator_swarm.helpers import MiB, Stopwatch, SwarmRuns


async def service_exists(docker: aiodocker.Docker, name: str) -> bool:
    try:
        await docker.services.inspect(name)
    except aiodocker.DockerError as exc:
        assert exc.status == 404
        return False
    return True


async def test_run_exits_0_with_last_lines_then_everything_is_removed(
    runs: SwarmRuns, docker: aiodocker.Docker
) -> None:
    run = runs.run_name()
    name = service_name(runs.workdir(run), run)

    container = await runs.launch("lines", run)

    assert container.state is ContainerState.RUNNING
    assert container.backend == "swarm"
    assert re.fullmatch(r"[0-9a-f]{64}", container.container_id)
    assert container.start_time is not None
    exited = await runs.exited(run)
    assert await runs.events_of(run) == [ContainerState.RUNNING, ContainerState.EXITED]
    assert exited.exit_cause is ExitCause.EXITED
    assert exited.exit_code == 0
    assert exited.container_id == container.container_id
    assert exited.end_time is not None and exited.end_time >= container.start_time
    # The last 50 lines of the service's logs, stdout and stderr together.
    assert list(exited.last_output_lines) == [
        *(f"line {i}" for i in range(11, 60)),
        "to stderr",
    ]
    assert await runs.backend.get(run) == exited
    # Removed once reported: service, secret, container, work dir.
    await runs.backend.close(1.0)  # waits for the removal that follows the event
    assert not await service_exists(docker, name)
    assert not await docker.secrets.list(filters={"name": name})
    with pytest.raises(aiodocker.DockerError) as gone:
        await docker.containers.container(container.container_id).show()
    assert gone.value.status == 404
    assert not runs.workdir(run).exists()


async def test_nonzero_exit_code_and_last_lines(runs: SwarmRuns) -> None:
    container = await runs.launch("exit3")

    exited = await runs.exited(container.run)

    assert exited.exit_cause is ExitCause.EXITED
    assert exited.exit_code == 3
    assert list(exited.last_output_lines) == ["bye"]


async def test_memory_hog_is_oom_killed(runs: SwarmRuns) -> None:
    container = await runs.launch("oom", limits=Limits(memory_bytes=64 * MiB))

    exited = await runs.exited(container.run)

    assert exited.exit_cause is ExitCause.OOM_KILLED
    assert exited.exit_code == -signal.SIGKILL


async def test_deadline_terminates_then_kills(runs: SwarmRuns) -> None:
    deadline, grace = 2.0, 1.0  # grace: the fixture's kill_grace
    watch = Stopwatch()
    container = await runs.launch("stubborn", deadline=deadline)
    assert container.deadline_time is not None and container.start_time is not None
    assert container.deadline_time > container.start_time

    exited = await runs.exited(container.run)

    assert exited.exit_cause is ExitCause.DEADLINE_EXCEEDED
    assert exited.exit_code == -signal.SIGKILL  # it ignored SIGTERM
    assert deadline + grace - 0.1 <= watch.elapsed <= deadline + grace + 20


async def test_stop_of_a_cooperative_engine_returns_at_once(runs: SwarmRuns) -> None:
    container = await runs.launch("sleep")
    await runs.until_ready(container.run)

    watch = Stopwatch()
    stopped = await runs.backend.stop(container.run, grace=30.0)

    # docker-init (PID 1) forwarded SIGTERM to the engine, which died of it.
    assert watch.elapsed < 20
    assert stopped.state is ContainerState.EXITED
    assert stopped.exit_cause is ExitCause.STOPPED
    assert stopped.exit_code == -signal.SIGTERM
    assert await runs.exited(container.run) == stopped


async def test_stop_waits_grace_then_kills(runs: SwarmRuns) -> None:
    container = await runs.launch("stubborn")
    await runs.until_ready(container.run)

    watch = Stopwatch()
    stopped = await runs.backend.stop(container.run, grace=1.5)

    assert 1.4 <= watch.elapsed <= 1.5 + 20
    assert stopped.exit_cause is ExitCause.STOPPED
    assert stopped.exit_code == -signal.SIGKILL
    # An exited run is returned as it is.
    assert await runs.backend.stop(container.run) == stopped


async def test_launch_is_idempotent_per_run(runs: SwarmRuns) -> None:
    run = runs.run_name()
    first = await runs.launch("sleep", run)
    second = await runs.launch("exit3", run)

    assert second == first
    assert [c.run for c in await runs.backend.list()] == [run]


async def test_missing_image_is_refused_with_not_found(runs: SwarmRuns) -> None:
    run = runs.run_name()
    missing = "sha256:" + "0" * 64

    with pytest.raises(NotFound) as refused:
        await runs.launch("exit3", run, image=missing)

    assert refused.value.reason == "IMAGE_NOT_FOUND"
    assert refused.value.metadata == {"image_digest": missing}
    assert not runs.workdir(run).exists()
    with pytest.raises(NotFound):
        await runs.backend.get(run)


async def test_service_removed_behind_our_back_is_vanished(
    runs: SwarmRuns, docker: aiodocker.Docker
) -> None:
    container = await runs.launch("sleep")
    await runs.until_ready(container.run)

    await docker.services.delete(service_name(runs.workdir(container.run), container.run))

    exited = await runs.exited(container.run)
    assert exited.exit_cause is ExitCause.VANISHED
    assert list(exited.last_output_lines) == [SERVICE_VANISHED_LINE]


async def test_outside_kill_is_signaled(runs: SwarmRuns, docker: aiodocker.Docker) -> None:
    container = await runs.launch("sleep")
    await runs.until_ready(container.run)

    await docker.containers.container(container.container_id).kill(signal="SIGKILL")

    exited = await runs.exited(container.run)
    assert exited.exit_cause is ExitCause.SIGNALED
    assert exited.exit_code == -signal.SIGKILL
