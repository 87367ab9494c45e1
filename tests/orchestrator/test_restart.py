"""Restart safety of the process backend: an engine outlives an orchestrator process killed
with SIGKILL (it runs in a session of its own); the next orchestrator over the same data dir
re-attaches it, lists it in its registration, re-arms its deadline, reports its end (with
sequences above its predecessor's), and leaves no work dir (nor cgroup) behind once the run
has ended. Exits that happened while no orchestrator ran are reported
too; their exit codes are lost with their parent."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pytest

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.orchestrator.backend import RunName
from flnet.orchestrator.process_backend import UNKNOWN_STATUS_LINE, ProcessBackend
from flnet.orchestrator.process_engine import (
    ENGINE_FILE,
    EngineRecord,
    start_ticks,
    wait_for_exit,
)
from flnet.orchestrator.workdir import WorkDir
from tests.auth.issuer import Issuer
from tests.identity import orchestrator_client_env
from tests.orchestrator.hand_control import HandControl
from tests.orchestrator.helpers import (
    TIMEOUT,
    Orchestrator,
    StartOrchestrator,
    Stopwatch,
    process_gone,
    seconds,
    serve_module,
    wait_for,
)

# Says it is ready, then exits with the code written to its input dir's "go" file.
WAIT_FOR_GO = """
    import os, pathlib, sys, time
    pathlib.Path(os.environ["FLNET_OUTPUT_DIR"], "ready").touch()
    go = pathlib.Path(os.environ["FLNET_INPUT_DIR"], "go")
    while not go.exists():
        time.sleep(0.02)
    print("going", flush=True)
    sys.exit(int(go.read_text() or 0))
"""

STUBBORN = """
    import os, pathlib, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pathlib.Path(os.environ["FLNET_OUTPUT_DIR"], "ready").touch()
    time.sleep(600)
"""


class Killed:
    """An orchestrator process (process backend) that launched runs and was then killed."""

    def __init__(self, data_dir: Path, runs: list[pb.RunContainer]) -> None:
        self.data_dir = data_dir
        self.runs = runs

    def workdir(self, run: str) -> Path:
        _, tenant, _, run_id = run.split("/")
        return self.data_dir / "orchestrator" / "runs" / f"{tenant}_{run_id}"


class KillAfterLaunching(Protocol):
    """The `kill_after_launching` fixture: (tool.py body, LaunchRunRequest fields) pairs in."""

    async def __call__(self, *launches: tuple[str, dict[str, object]]) -> Killed: ...


@pytest.fixture
async def kill_after_launching(
    tmp_path: Path, fake_engine: list[str], http_issuer: Issuer, hand_control: HandControl
) -> AsyncIterator[KillAfterLaunching]:
    """Starts ``python -m flnet.orchestrator`` over tmp_path/shared, attached to the test's
    control plane, launches the given tools (tool.py bodies, with LaunchRunRequest fields)
    through it, waits until each is ready and its start reported, then kills the
    orchestrator with SIGKILL. Engines still running at teardown are killed."""
    engines: list[int] = []

    async def run(*launches: tuple[str, dict[str, object]]) -> Killed:
        data_dir = tmp_path / "shared"
        env = {**os.environ, **orchestrator_client_env(http_issuer)}
        command = " ".join(fake_engine)
        process = await serve_module(
            hand_control, "--data-dir", str(data_dir), "--engine-command", command, env=env
        )
        launched: list[pb.RunContainer] = []
        try:
            for i, (body, fields) in enumerate(launches):
                tool = tmp_path / f"tool{i}"
                tool.mkdir()
                (tool / "tool.py").write_text(body.replace("\n    ", "\n"))
                request = pb.LaunchRunRequest(
                    run=f"tenants/acme/runs/survivor{i}",
                    source_path=str(tool),
                    entrypoint="tool.py:main",
                    control_address="127.0.0.1:1",
                    **fields,  # type: ignore[arg-type]
                )
                result = await hand_control.command(sp.FleetCommand(launch=request), TIMEOUT)
                assert result.code == 0, result.message
                engines.append(int(result.container.container_id))
                launched.append(result.container)
            killed = Killed(data_dir, launched)
            for container in launched:
                ready = killed.workdir(container.run) / "output" / "ready"
                await wait_for(ready.exists)
            # No report of it is still on its way when the next orchestrator starts.
            started = {(c.run, pb.CONTAINER_STATE_RUNNING) for c in launched}
            await hand_control.wait_until(
                lambda: (
                    started <= {(r.container.run, r.container.state) for r in hand_control.reports}
                ),
                TIMEOUT,
            )
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        return killed

    yield run
    for pid in engines:
        if not process_gone(pid):
            os.killpg(pid, signal.SIGKILL)


def cgroup_dirs(orch: Orchestrator, run: str) -> tuple[Path, ...]:
    backend = orch.app.backend
    assert isinstance(backend, ProcessBackend)
    if backend.cgroups is None:
        return ()
    return backend.cgroups.of(RunName.parse(run)).join_dirs


async def test_a_killed_orchestrators_engine_is_re_attached_and_cleaned_up_once_ended(
    kill_after_launching: KillAfterLaunching,
    start_orchestrator: StartOrchestrator,
    hand_control: HandControl,
) -> None:
    killed = await kill_after_launching((WAIT_FOR_GO, {}))
    [launched] = killed.runs
    pid = int(launched.container_id)
    assert not process_gone(pid)  # it outlived the orchestrator

    predecessor = hand_control.acked
    second = await start_orchestrator(data_dir=killed.data_dir)

    listed = await second.list()
    assert [(c.run, c.container_id, c.state) for c in listed] == [
        (launched.run, launched.container_id, pb.CONTAINER_STATE_RUNNING)
    ]
    assert listed[0].start_time == launched.start_time
    # Its registration lists it for the control plane.
    registration = hand_control.registrations[-1]
    assert registration.backend == "process"
    assert list(registration.containers) == listed
    # A relaunch returns the re-attached engine.
    again = await second.launch("pass", run=launched.run)
    assert (again.container_id, again.state) == (launched.container_id, pb.CONTAINER_STATE_RUNNING)
    workdir = killed.workdir(launched.run)
    (workdir / "input" / "go").write_text("3")

    events = await second.events_of(launched.run)

    assert [e.container.state for e in events] == [
        pb.CONTAINER_STATE_RUNNING,
        pb.CONTAINER_STATE_EXITED,
    ]
    exited = events[-1].container
    # Only its parent, the killed process, could have learnt its exit code.
    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_VANISHED, 0)
    assert list(exited.last_output_lines) == ["going", UNKNOWN_STATUS_LINE]
    assert process_gone(pid)
    assert not workdir.exists()
    assert not any(path.exists() for path in cgroup_dirs(second, launched.run))
    # Its sequences continue above the killed one's: none was taken for a resend.
    assert all(r.sequence > predecessor for r in hand_control.reports[second.since :])


async def test_exits_while_no_orchestrator_ran_are_reported_and_their_work_dirs_removed(
    kill_after_launching: KillAfterLaunching, start_orchestrator: StartOrchestrator
) -> None:
    killed = await kill_after_launching((WAIT_FOR_GO, {}), (STUBBORN, {}))
    ended, stopped = killed.runs
    (killed.workdir(ended.run) / "input" / "go").write_text("0")
    # As an orchestrator dying right after its deadline timer sent SIGKILL leaves it.
    (killed.workdir(stopped.run) / "stop-cause").write_text("DEADLINE_EXCEEDED")
    os.killpg(int(stopped.container_id), signal.SIGKILL)
    # A run whose launch never got to start its engine.
    never = killed.data_dir / "orchestrator" / "runs" / "acme_never"
    (never / "output").mkdir(parents=True)
    await wait_for(lambda: process_gone(int(ended.container_id)))
    await wait_for(lambda: process_gone(int(stopped.container_id)))

    second = await start_orchestrator(data_dir=killed.data_dir)
    first = await second.events_of(ended.run)
    last = await second.events_of(stopped.run)

    # Reported, not re-announced as running.
    assert [e.container.state for e in first] == [pb.CONTAINER_STATE_EXITED]
    assert (first[0].container.exit_cause, first[0].container.exit_code) == (
        pb.EXIT_CAUSE_VANISHED,
        0,
    )
    assert list(first[0].container.last_output_lines) == ["going", UNKNOWN_STATUS_LINE]
    assert [e.container.state for e in last] == [pb.CONTAINER_STATE_EXITED]
    assert last[0].container.exit_cause == pb.EXIT_CAUSE_DEADLINE_EXCEEDED
    runs = killed.data_dir / "orchestrator" / "runs"
    assert sorted(runs.iterdir()) == []


async def test_a_re_attached_engine_keeps_its_deadline(
    kill_after_launching: KillAfterLaunching,
    start_orchestrator: StartOrchestrator,
    hand_control: HandControl,
) -> None:
    deadline, grace = 3.0, 1.0  # grace: the fixture's kill_grace
    watch = Stopwatch()
    killed = await kill_after_launching((STUBBORN, {"deadline": seconds(deadline)}))
    [launched] = killed.runs

    second = await start_orchestrator(data_dir=killed.data_dir)
    got = await second.get(launched.run)
    assert got.deadline_time == launched.deadline_time
    assert [c.deadline_time for c in hand_control.registrations[-1].containers] == [
        launched.deadline_time
    ]
    exited = await second.exited(launched.run)

    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_DEADLINE_EXCEEDED, 0)
    assert deadline + grace - 0.1 <= watch.elapsed <= deadline + grace + 20
    assert process_gone(int(launched.container_id))
    assert not killed.workdir(launched.run).exists()


async def test_an_engine_record_names_one_process_only(tmp_path: Path) -> None:
    workdir = WorkDir(tmp_path / "acme_r1")
    workdir.path.mkdir()
    assert EngineRecord.read(workdir) is None  # never started
    (workdir.path / ENGINE_FILE).write_text("{not json")
    assert EngineRecord.read(workdir) is None  # unreadable: as if never started
    sleeper = await asyncio.create_subprocess_exec("sleep", "0.3")
    now = datetime.now(UTC)
    record = EngineRecord(sleeper.pid, start_ticks(sleeper.pid), now, None)
    record.write(workdir)
    assert EngineRecord.read(workdir) == record
    assert record.alive()
    # The same pid with another start time is another process.
    assert not replace(record, start_ticks=record.start_ticks + 1).alive()

    watch = Stopwatch()
    await wait_for_exit(record)  # through a pidfd, as for a process that is not our child

    assert 0.2 < watch.elapsed < TIMEOUT
    await sleeper.wait()
    assert not record.alive()
    await wait_for_exit(record)  # gone: at once
