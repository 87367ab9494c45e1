"""Launch, exit classification (exit code, OOM, deadline, stop command, outside kill, removal
behind our back), idempotency, listing and concurrency, against the real Docker engine,
through the real session with a control plane (the test's)."""

from __future__ import annotations

import asyncio
import re
import signal

import aiodocker

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.orchestrator.docker_state import VANISHED_LINE
from tests.orchestrator.helpers import Stopwatch, seconds
from tests.orchestrator_docker.helpers import DockerOrchestrator, MiB, StartDockerOrchestrator


async def test_launch_reports_running_then_exited_with_last_lines(
    orch: DockerOrchestrator, docker: aiodocker.Docker
) -> None:
    container = await orch.launch_probe("lines", tenant="acme")

    assert container.state == pb.CONTAINER_STATE_RUNNING
    assert container.backend == "docker"
    assert re.fullmatch(r"[0-9a-f]{64}", container.container_id)
    assert container.HasField("start_time")
    events = await orch.events_of(container.run)

    assert [e.container.state for e in events] == [
        pb.CONTAINER_STATE_RUNNING,
        pb.CONTAINER_STATE_EXITED,
    ]
    exited = events[-1].container
    assert exited.exit_cause == pb.EXIT_CAUSE_EXITED
    assert exited.exit_code == 0
    assert exited.container_id == container.container_id
    assert exited.end_time.ToDatetime() >= exited.start_time.ToDatetime()
    # The last 50 lines of docker logs, stdout and stderr together.
    assert list(exited.last_output_lines) == [
        *(f"line {i}" for i in range(11, 60)),
        "to stderr",
    ]


async def test_nonzero_exit_code_is_reported(orch: DockerOrchestrator) -> None:
    container = await orch.launch_probe("exit3")

    exited = await orch.exited(container.run)

    assert exited.exit_cause == pb.EXIT_CAUSE_EXITED
    assert exited.exit_code == 3
    assert list(exited.last_output_lines) == ["bye"]


async def test_memory_hog_is_oom_killed(orch: DockerOrchestrator) -> None:
    container = await orch.launch_probe("oom", limits=pb.Limits(memory_bytes=64 * MiB))

    exited = await orch.exited(container.run)

    assert exited.exit_cause == pb.EXIT_CAUSE_OOM_KILLED
    assert exited.exit_code == -signal.SIGKILL


async def test_deadline_terminates_then_kills(orch: DockerOrchestrator) -> None:
    deadline, grace = 2.0, 1.0  # grace: the fixture's kill_grace
    watch = Stopwatch()
    container = await orch.launch_probe("stubborn", deadline=seconds(deadline))
    assert container.deadline_time.ToDatetime() > container.start_time.ToDatetime()

    exited = await orch.exited(container.run)

    assert exited.exit_cause == pb.EXIT_CAUSE_DEADLINE_EXCEEDED
    assert exited.exit_code == -signal.SIGKILL  # it ignored SIGTERM
    assert deadline + grace - 0.1 <= watch.elapsed <= deadline + grace + 20


async def test_stop_run_waits_grace_then_kills(orch: DockerOrchestrator) -> None:
    container = await orch.launch_probe("stubborn")
    await orch.until_ready(container.run)

    watch = Stopwatch()
    stopped = await orch.stop(container.run, 1.5)

    assert 1.4 <= watch.elapsed <= 1.5 + 20
    assert stopped.state == pb.CONTAINER_STATE_EXITED
    assert stopped.exit_cause == pb.EXIT_CAUSE_STOPPED
    assert stopped.exit_code == -signal.SIGKILL
    assert (await orch.exited(container.run)) == stopped


async def test_stop_run_of_a_cooperative_engine_returns_at_once(orch: DockerOrchestrator) -> None:
    container = await orch.launch_probe("sleep")
    await orch.until_ready(container.run)

    watch = Stopwatch()
    stopped = await orch.stop(container.run, 30)

    # docker-init (PID 1) forwarded SIGTERM to the engine, which died of it.
    assert watch.elapsed < 20
    assert stopped.exit_cause == pb.EXIT_CAUSE_STOPPED
    assert stopped.exit_code == -signal.SIGTERM


async def test_outside_kill_is_signaled(orch: DockerOrchestrator, docker: aiodocker.Docker) -> None:
    container = await orch.launch_probe("sleep")
    await orch.until_ready(container.run)

    await docker.containers.container(container.container_id).kill(signal="SIGKILL")

    exited = await orch.exited(container.run)
    assert exited.exit_cause == pb.EXIT_CAUSE_SIGNALED
    assert exited.exit_code == -signal.SIGKILL


async def test_removal_behind_our_back_is_vanished(
    orch: DockerOrchestrator, docker: aiodocker.Docker
) -> None:
    container = await orch.launch_probe("sleep")
    await orch.until_ready(container.run)

    await docker.containers.container(container.container_id).delete(force=True)

    exited = await orch.exited(container.run)
    assert exited.exit_cause == pb.EXIT_CAUSE_VANISHED
    assert list(exited.last_output_lines) == [VANISHED_LINE]


async def test_launch_is_idempotent_per_run(orch: DockerOrchestrator) -> None:
    run = orch.run_name()
    first = await orch.launch_probe("sleep", run=run)
    second = await orch.launch_probe("exit3", run=run)

    assert second == first
    listed = await orch.list()
    assert [c.run for c in listed] == [run]
    assert await orch.get(run) == first


async def test_engine_command_replaces_the_image_cmd(
    start_orchestrator: StartDockerOrchestrator,
) -> None:
    orch = await start_orchestrator(engine_command=["python3", "-c", "print('replaced')"])
    container = await orch.launch_probe("exit3")

    exited = await orch.exited(container.run)

    assert (exited.exit_code, list(exited.last_output_lines)) == (0, ["replaced"])


async def test_an_engine_command_that_cannot_execute_exits_127(
    start_orchestrator: StartDockerOrchestrator,
) -> None:
    orch = await start_orchestrator(engine_command=["/nonexistent/engine"])
    container = await orch.launch_probe("exit3")

    exited = await orch.exited(container.run)

    # docker-init (PID 1) reports it.
    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_EXITED, 127)
    assert "exec /nonexistent/engine failed" in exited.last_output_lines[-1]


async def test_twenty_concurrent_containers_all_exit_zero(orch: DockerOrchestrator) -> None:
    runs = [orch.run_name() for _ in range(20)]

    launched = await asyncio.gather(*(orch.launch_probe("lines", run=run) for run in runs))
    exited = await asyncio.gather(*(orch.exited(c.run) for c in launched))

    assert len({c.container_id for c in launched}) == 20
    assert [(c.exit_cause, c.exit_code) for c in exited] == [(pb.EXIT_CAUSE_EXITED, 0)] * 20
