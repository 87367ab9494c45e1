"""Launch, exit classification, deadlines, StopRun, idempotency, listing, work dirs and the
app's shutdown, through the real session with a control plane (the test's)."""

from __future__ import annotations

import os
import signal

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.orchestrator.backend import ContainerState, ExitCause, RunName
from tests.orchestrator.helpers import (
    Orchestrator,
    Stopwatch,
    process_gone,
    seconds,
    wait_for,
)

SLEEPER = """
    import os, pathlib, time
    pathlib.Path(os.environ["FLNET_OUTPUT_DIR"], "ready").touch()
    time.sleep(600)
"""

# Ignores SIGTERM, then says it is ready: only SIGKILL ends it.
STUBBORN = """
    import os, pathlib, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pathlib.Path(os.environ["FLNET_OUTPUT_DIR"], "ready").touch()
    time.sleep(600)
"""


def ready(orch: Orchestrator, run: str) -> bool:
    return (orch.workdir(run) / "output" / "ready").exists()


async def test_launch_reports_running_then_exited_with_code_and_last_lines(
    orch: Orchestrator,
) -> None:
    container = await orch.launch(
        """
        import sys
        for i in range(60):
            print(f"line {i}")
        print("to stderr", file=sys.stderr)
        """,
        tenant="acme",
    )
    assert container.state == pb.CONTAINER_STATE_RUNNING
    assert container.backend == "process"
    assert int(container.container_id) > 0
    assert container.HasField("start_time")

    events = await orch.events_of(container.run)

    assert [e.container.state for e in events] == [
        pb.CONTAINER_STATE_RUNNING,
        pb.CONTAINER_STATE_EXITED,
    ]
    assert events[0].sequence < events[1].sequence
    exited = events[1].container
    assert exited.exit_cause == pb.EXIT_CAUSE_EXITED
    assert exited.exit_code == 0
    assert exited.container_id == container.container_id
    assert exited.end_time.ToDatetime() >= exited.start_time.ToDatetime()
    # The last 50 lines, stdout and stderr together.
    assert list(exited.last_output_lines) == [
        *(f"line {i}" for i in range(11, 60)),
        "to stderr",
    ]


async def test_nonzero_exit_code_is_reported(orch: Orchestrator) -> None:
    container = await orch.launch("import sys; print('bye'); sys.exit(3)")

    exited = await orch.exited(container.run)

    assert exited.exit_cause == pb.EXIT_CAUSE_EXITED
    assert exited.exit_code == 3
    assert list(exited.last_output_lines) == ["bye"]


async def test_outside_sigkill_is_signaled(orch: Orchestrator) -> None:
    container = await orch.launch(SLEEPER)
    await wait_for(lambda: ready(orch, container.run))

    os.kill(int(container.container_id), signal.SIGKILL)

    exited = await orch.exited(container.run)
    assert exited.exit_cause == pb.EXIT_CAUSE_SIGNALED
    assert exited.exit_code == -signal.SIGKILL


async def test_deadline_terminates_then_kills_within_deadline_plus_grace(
    orch: Orchestrator,
) -> None:
    deadline, grace = 4.0, 1.0  # grace: the fixture's kill_grace
    watch = Stopwatch()
    container = await orch.launch(STUBBORN, deadline=seconds(deadline))
    assert container.deadline_time.ToDatetime() > container.start_time.ToDatetime()
    await wait_for(lambda: ready(orch, container.run), limit=deadline)

    exited = await orch.exited(container.run)

    assert exited.exit_cause == pb.EXIT_CAUSE_DEADLINE_EXCEEDED
    assert exited.exit_code == -signal.SIGKILL  # it ignored SIGTERM
    assert deadline + grace - 0.1 <= watch.elapsed <= deadline + grace + 20


async def test_deadline_of_a_cooperative_engine_ends_with_sigterm(orch: Orchestrator) -> None:
    watch = Stopwatch()
    container = await orch.launch(SLEEPER, deadline=seconds(1.0))

    exited = await orch.exited(container.run)

    assert exited.exit_cause == pb.EXIT_CAUSE_DEADLINE_EXCEEDED
    assert exited.exit_code == -signal.SIGTERM
    assert watch.elapsed >= 0.9


async def test_stop_run_waits_grace_then_kills(orch: Orchestrator) -> None:
    container = await orch.launch(STUBBORN)
    await wait_for(lambda: ready(orch, container.run))

    watch = Stopwatch()
    stopped = await orch.stop(container.run, 1.5)

    assert 1.4 <= watch.elapsed <= 1.5 + 20
    assert stopped.state == pb.CONTAINER_STATE_EXITED
    assert stopped.exit_cause == pb.EXIT_CAUSE_STOPPED
    assert stopped.exit_code == -signal.SIGKILL
    assert (await orch.exited(container.run)) == stopped


async def test_stop_run_of_a_cooperative_engine_returns_at_once(orch: Orchestrator) -> None:
    container = await orch.launch(SLEEPER)
    await wait_for(lambda: ready(orch, container.run))

    watch = Stopwatch()
    stopped = await orch.stop(container.run, 30)

    assert watch.elapsed < 20
    assert stopped.exit_cause == pb.EXIT_CAUSE_STOPPED
    assert stopped.exit_code == -signal.SIGTERM


async def test_stop_run_of_an_exited_container_returns_it(orch: Orchestrator) -> None:
    container = await orch.launch("raise SystemExit(7)")
    exited = await orch.exited(container.run)

    stopped = await orch.stop(container.run)

    assert stopped == exited
    assert stopped.exit_cause == pb.EXIT_CAUSE_EXITED
    assert stopped.exit_code == 7


async def test_exit_kills_what_the_engine_left_in_its_group(orch_keep: Orchestrator) -> None:
    orch = orch_keep
    container = await orch.launch(
        """
        import os, pathlib, subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        pathlib.Path(os.environ["FLNET_OUTPUT_DIR"], "child").write_text(str(child.pid))
        """
    )
    exited = await orch.exited(container.run)
    assert exited.exit_code == 0
    # The grandchild shared the engine's process group: it dies with the engine.
    pid = int((orch.workdir(container.run) / "output" / "child").read_text())
    await wait_for(lambda: process_gone(pid))


async def test_launch_is_idempotent_per_run(orch: Orchestrator) -> None:
    run = orch.run_name()
    first = await orch.launch(SLEEPER, run=run)
    second = await orch.launch("raise SystemExit(1)", run=run)

    assert second == first
    listed = await orch.list()
    assert [c.run for c in listed] == [run]


async def test_get_and_list_run_containers(orch: Orchestrator) -> None:
    running = await orch.launch(SLEEPER)
    finished = await orch.launch("pass")
    await orch.exited(finished.run)

    assert await orch.get(running.run) == running
    live = await orch.list()
    assert [c.run for c in live] == [running.run]
    everything = await orch.list(include_exited=True)
    assert sorted(c.run for c in everything) == sorted([running.run, finished.run])
    states = {c.run: c.state for c in everything}
    assert states[finished.run] == pb.CONTAINER_STATE_EXITED


async def test_work_dir_is_removed_after_exit(orch: Orchestrator) -> None:
    container = await orch.launch(SLEEPER)
    workdir = orch.workdir(container.run)
    await wait_for(lambda: ready(orch, container.run))
    assert (workdir / "input").is_dir()
    assert (workdir / "credential").is_file()

    await orch.stop(container.run, 5)

    assert not workdir.exists()


async def test_keep_workdirs_keeps_the_log(orch_keep: Orchestrator) -> None:
    container = await orch_keep.launch("print('kept')")
    await orch_keep.exited(container.run)

    log = orch_keep.workdir(container.run) / "engine.log"
    assert log.read_text() == "kept\n"


async def test_app_stop_terminates_running_engines(orch: Orchestrator) -> None:
    stubborn = await orch.launch(STUBBORN)
    cooperative = await orch.launch(SLEEPER)
    await wait_for(lambda: ready(orch, stubborn.run) and ready(orch, cooperative.run))

    watch = Stopwatch()
    await orch.app.stop()

    assert watch.elapsed < 20
    for container in (stubborn, cooperative):
        last = await orch.app.backend.get(RunName.parse(container.run))
        assert last.state is ContainerState.EXITED
        assert last.exit_cause is ExitCause.STOPPED
        assert process_gone(int(container.container_id))
