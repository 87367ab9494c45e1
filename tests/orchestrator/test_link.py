"""The control link (SessionService.Attach from the orchestrator's side), against the test's
own control plane: reports kept until acknowledged and resent once after a reconnect,
sequences that continue across restarts, commands of one run in order (and of different runs
side by side), registration, reconnection after refusals and a control plane restart,
heartbeats, capacity reports; and the link over any Backend."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence

import grpc
import pytest

from flnet import timeouts
from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.errors import ResourceExhausted, Unauthenticated
from flnet.orchestrator.backend import (
    Container,
    ContainerEvent,
    ContainerState,
    LaunchSpec,
    RunName,
)
from flnet.orchestrator.convert import container_to_proto
from flnet.orchestrator.events import EventLog
from flnet.orchestrator.link import ControlLink
from tests.identity import orchestrator_token
from tests.orchestrator.hand_control import HandControl, status_code
from tests.orchestrator.helpers import (
    ORCHESTRATOR_IDENTITY,
    TIMEOUT,
    CommandFailed,
    Orchestrator,
    StartOrchestrator,
    Stopwatch,
    wait_for,
)

SLEEPER = "import time; time.sleep(600)"
# Ignores SIGTERM; says when it does.
STUBBORN = """
    import os, pathlib, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pathlib.Path(os.environ["FLNET_OUTPUT_DIR"], "ready").touch()
    time.sleep(600)
"""


def about(run: str) -> Callable[[sp.Report], bool]:
    """Whether a report is a container event or a command result of `run`."""

    def test(report: sp.Report) -> bool:
        return run in (report.container.run, report.command_result.run)

    return test


def consecutive(reports: Sequence[sp.Report]) -> bool:
    sequences = [r.sequence for r in reports]
    return sequences == list(range(sequences[0], sequences[0] + len(sequences)))


async def reattached(control: HandControl, registrations: int) -> None:
    """Until the orchestrator has registered `registrations` times and its session is open."""
    await control.wait_registrations(registrations, TIMEOUT)
    await timeouts.wait_for(control.attached.wait(), TIMEOUT)


async def test_unacknowledged_reports_are_resent_after_a_reconnect_and_applied_once(
    orch: Orchestrator,
) -> None:
    control = orch.control
    control.acking = False
    command = orch.launch_command("print('once')")
    run = command.launch.run
    command_id = control.send(command)

    def sent() -> list[sp.Report]:
        return [r for r in control.received if about(run)(r)]

    # Its command result, RUNNING and EXITED came, none applied.
    await control.wait_until(lambda: len(sent()) == 3, TIMEOUT)
    pending = sorted(sent(), key=lambda r: r.sequence)
    assert not [r for r in control.reports if about(run)(r)]
    assert len(orch.app.link.outbox) == 3  # kept until acknowledged

    control.acking = True
    control.drop()

    result = await control.result(command_id, TIMEOUT)
    assert status_code(result) == grpc.StatusCode.OK
    exited = await orch.exited(run)
    assert list(exited.last_output_lines) == ["once"]
    await wait_for(lambda: len(orch.app.link.outbox) == 0)
    assert len(control.registrations) == 2
    # Each applied once, as it was first sent; each came twice (sent, then resent).
    applied = [r for r in control.reports if about(run)(r)]
    assert applied == pending
    assert [r.sequence for r in sent()] == [r.sequence for r in pending] * 2
    assert consecutive(control.reports)


async def test_reports_the_control_plane_applied_are_not_resent(orch: Orchestrator) -> None:
    """Attached.acked_sequence acknowledges what a lost ReportAck did not."""
    control = orch.control
    control.sending_acks = False
    first = await orch.launch("pass")
    await orch.exited(first.run)
    assert len(orch.app.link.outbox) >= 3  # applied, but the orchestrator does not know
    applied, received = control.acked, len(control.received)

    control.sending_acks = True
    control.drop()
    await reattached(control, 2)
    await wait_for(lambda: len(orch.app.link.outbox) == 0)
    second = await orch.launch("pass")
    await orch.exited(second.run)

    assert [r.sequence for r in control.received[received:] if r.sequence <= applied] == []
    assert consecutive(control.reports)
    assert len(control.received) == len(control.reports)  # none came twice


async def test_a_restarted_orchestrator_continues_above_its_predecessors_sequences(
    start_orchestrator: StartOrchestrator, hand_control: HandControl
) -> None:
    first = await start_orchestrator()
    earlier = await first.launch("pass")
    await first.exited(earlier.run)
    await first.app.stop()
    last = hand_control.acked

    second = await start_orchestrator(data_dir=first.data_dir)
    later = await second.launch("pass")
    await second.exited(later.run)

    mine = hand_control.reports[second.since :]
    assert len(mine) == 3  # command result, RUNNING, EXITED: none taken for a resend
    assert all(r.sequence > last for r in mine)
    assert consecutive(mine)


async def test_a_stop_right_after_a_launch_stops_the_launched_container(
    orch: Orchestrator,
) -> None:
    """Commands of one run are carried out in order: the stop never finds no container."""
    control = orch.control
    await timeouts.wait_for(control.attached.wait(), TIMEOUT)
    pairs = []
    for _ in range(5):
        launch = orch.launch_command(SLEEPER)
        pairs.append((control.send(launch), control.send(orch.stop_command(launch.launch.run, 5))))

    for launch_id, stop_id in pairs:
        launched = await control.result(launch_id, TIMEOUT)
        stopped = await control.result(stop_id, TIMEOUT)
        assert (status_code(launched), status_code(stopped)) == (grpc.StatusCode.OK,) * 2, (
            launched.message,
            stopped.message,
        )
        assert stopped.container.container_id == launched.container.container_id
        assert stopped.container.state == pb.CONTAINER_STATE_EXITED
        assert stopped.container.exit_cause == pb.EXIT_CAUSE_STOPPED
    assert not await orch.list()


async def test_commands_of_different_runs_do_not_wait_for_each_other(orch: Orchestrator) -> None:
    control = orch.control
    stubborn = await orch.launch(STUBBORN)
    await wait_for((orch.workdir(stubborn.run) / "output" / "ready").exists)

    watch = Stopwatch()
    stop_id = control.send(orch.stop_command(stubborn.run, 5))
    launch_id = control.send(orch.launch_command("pass"))
    launched = await control.result(launch_id, TIMEOUT)
    launched_after = watch.elapsed
    stopped = await control.result(stop_id, TIMEOUT)

    assert status_code(launched) == grpc.StatusCode.OK
    assert launched_after < 4  # not behind the other run's grace period
    assert stopped.container.exit_code == -signal.SIGKILL
    results = [r.command_result.command_id for r in control.reports if r.command_result.run]
    assert results.index(launch_id) < results.index(stop_id)


@pytest.mark.parametrize("kind", ["launch", "stop"])
async def test_a_command_for_a_malformed_run_name_is_invalid(orch: Orchestrator, kind: str) -> None:
    run = "tenants/Acme/runs/x"
    command = orch.launch_command("pass", run) if kind == "launch" else orch.stop_command(run)

    with pytest.raises(CommandFailed) as info:
        await orch.command(command)

    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details == ("RUN_NAME_INVALID", ["run"])
    assert info.value.result.run == run
    assert info.value.result.command_id == command.id


async def test_registration_names_the_orchestrator_and_lists_its_containers(
    orch: Orchestrator,
) -> None:
    control = orch.control
    [first] = control.registrations
    assert first.name == "test"
    assert first.backend == "process"
    assert (first.capacity.cpu_millis, first.capacity.memory_bytes, first.capacity.run_slots) == (
        64_000,
        64 * 1024**3,
        64,
    )
    assert dict(first.labels) == {"site": "test"}
    assert first.hostname == socket.gethostname()
    assert list(first.containers) == []
    running = await orch.launch(SLEEPER)

    control.drop()
    await reattached(control, 2)

    again = control.registrations[1]
    assert [c for c in again.containers if c.state != pb.CONTAINER_STATE_EXITED] == [running]
    assert (again.name, again.capacity, again.labels) == (first.name, first.capacity, first.labels)


async def test_a_control_plane_that_restarts_is_dialled_again(
    orch: Orchestrator, hand_control: HandControl
) -> None:
    running = await orch.launch(SLEEPER)
    port = hand_control.port
    await hand_control.stop()
    await wait_for(lambda: not orch.app.link.attached.is_set())

    restarted = HandControl()
    await restarted.start(port)
    try:
        await reattached(restarted, 1)
        [registration] = restarted.registrations
        assert list(registration.containers) == [running]
        # Commands of the new control plane are carried out.
        orch.control, orch.since = restarted, 0
        stopped = await orch.stop(running.run, 5)
        assert stopped.exit_cause == pb.EXIT_CAUSE_STOPPED
    finally:
        await restarted.stop()


async def test_a_refused_session_is_dialled_again_when_the_control_plane_says(
    orch: Orchestrator,
) -> None:
    control = orch.control
    busy = ResourceExhausted("reconnecting too often")
    busy.retry_after = 1.5
    control.refusals = [Unauthenticated("the token expired"), busy]

    control.drop()
    await control.wait_until(lambda: len(control.refused) == 2, TIMEOUT)
    watch = Stopwatch()
    await reattached(control, 2)

    assert watch.elapsed >= 1.4  # RetryInfo's delay
    assert control.refused[0] == control.registrations[1]
    container = await orch.launch("pass")  # the session works
    await orch.exited(container.run)


async def test_heartbeats_come_at_the_interval_the_control_plane_sets(
    orch: Orchestrator,
) -> None:
    control = orch.control  # interval 0.5 s
    beats = control.heartbeats
    watch = Stopwatch()

    await wait_for(lambda: control.heartbeats >= beats + 3)

    assert 0.9 <= watch.elapsed <= TIMEOUT


async def test_capacity_changes_are_reported(orch: Orchestrator) -> None:
    orch.app.link.report_capacity(cpu_millis=500, memory_bytes=2**30, run_slots=2)

    async with asyncio.timeout(TIMEOUT):
        async for report in orch.control.follow(orch.since):
            if report.HasField("capacity"):
                break
    assert report.capacity == sp.Capacity(cpu_millis=500, memory_bytes=2**30, run_slots=2)


RUN = RunName("t", "r")
CONTAINER = Container(run=RUN, container_id="c1", backend="fake", state=ContainerState.RUNNING)


class FakeBackend:
    """A Backend that has one container and fails its stops on purpose."""

    def __init__(self) -> None:
        self.log = EventLog()

    @property
    def name(self) -> str:
        return "fake"

    async def start(self) -> None:
        return None

    async def launch(self, spec: LaunchSpec) -> Container:
        self.log.append(CONTAINER)
        return CONTAINER

    async def stop(self, run: RunName, grace: float | None = None) -> Container:
        raise RuntimeError("secret internal detail")

    async def get(self, run: RunName) -> Container:
        return CONTAINER

    async def list(self, *, include_exited: bool = False) -> Sequence[Container]:
        return [CONTAINER]

    async def events(self, after_sequence: int = 0) -> AsyncGenerator[ContainerEvent, None]:
        async for event in self.log.subscribe(after_sequence):
            yield event

    async def close(self, grace: float, *, end_engines: bool = True) -> None:
        return None


@pytest.fixture
async def fake_link(hand_control: HandControl) -> AsyncIterator[ControlLink]:
    link = ControlLink(
        FakeBackend(), ORCHESTRATOR_IDENTITY, hand_control.address, orchestrator_token
    )
    link.start()
    await reattached(hand_control, 1)
    yield link
    await link.close()


async def test_the_link_works_over_any_backend(
    fake_link: ControlLink, hand_control: HandControl
) -> None:
    [registration] = hand_control.registrations
    assert registration.backend == "fake"
    assert list(registration.containers) == [container_to_proto(CONTAINER)]

    launch = pb.LaunchRunRequest(run=str(RUN), source_path="/nowhere")
    result = await hand_control.command(sp.FleetCommand(launch=launch), TIMEOUT)

    assert status_code(result) == grpc.StatusCode.OK
    assert result.container == container_to_proto(CONTAINER)
    async with asyncio.timeout(TIMEOUT):
        async for report in hand_control.follow():
            if report.HasField("container"):
                break
    assert report.container == container_to_proto(CONTAINER)


async def test_unexpected_errors_are_internal_without_their_text(
    fake_link: ControlLink, hand_control: HandControl, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    command = sp.FleetCommand(stop=pb.StopRunRequest(run=str(RUN)))
    result = await hand_control.command(command, TIMEOUT)

    failed = CommandFailed(result)
    assert failed.code == grpc.StatusCode.INTERNAL
    assert failed.message == "internal error"
    assert failed.details == ("INTERNAL", [])
    assert b"secret internal detail" not in result.SerializeToString()
    assert "secret internal detail" in caplog.text  # logged, not sent
