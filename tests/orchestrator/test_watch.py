"""Container reports: every event of the backend reported once, in sequence order without
gaps, through sessions that come and go; the session ended at shutdown; and the EventLog
underneath."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.orchestrator.backend import Container, ContainerState, RunName
from flnet.orchestrator.errors import Unavailable
from flnet.orchestrator.events import EventLog
from tests.orchestrator.helpers import TIMEOUT, Orchestrator, wait_for


async def take(orch: Orchestrator, after_sequence: int, count: int) -> list[sp.Report]:
    events: list[sp.Report] = []
    async with asyncio.timeout(TIMEOUT):
        async for event in orch.watch(after_sequence):
            events.append(event)
            if len(events) == count:
                return events
    raise AssertionError("the watch ended")


async def test_reports_have_no_gaps_and_no_duplicates(orch: Orchestrator) -> None:
    runs = [(await orch.launch(f"print({i})")).run for i in range(3)]
    for run in runs:
        await orch.exited(run)

    history = await take(orch, 0, 6)

    assert sorted((e.container.run, e.container.state) for e in history) == sorted(
        (run, state)
        for run in runs
        for state in (pb.CONTAINER_STATE_RUNNING, pb.CONTAINER_STATE_EXITED)
    )
    # Every report applied (events and command results), in one run of sequences.
    applied = [r.sequence for r in orch.control.reports]
    assert applied == list(range(applied[0], applied[0] + 9))
    # After a new session, only what happens next, right after.
    orch.control.drop()
    await orch.control.wait_registrations(2, TIMEOUT)
    later = await orch.launch("pass")
    resumed = await take(orch, applied[-1], 2)
    assert [e.container.run for e in resumed] == [later.run, later.run]
    applied = [r.sequence for r in orch.control.reports]
    assert applied == list(range(applied[0], applied[0] + 12))
    assert len(orch.control.received) == 12


async def test_a_session_that_goes_away_leaves_nothing_behind(orch: Orchestrator) -> None:
    """One subscription to the backend's events for the link, whatever its sessions."""
    assert orch.app.events.subscribers == 1
    for sessions in range(2, 5):
        orch.control.drop()
        await orch.control.wait_registrations(sessions, TIMEOUT)
    await orch.control.wait_until(lambda: orch.control.sessions_ended == 3, TIMEOUT)

    container = await orch.launch("pass")
    assert (await orch.exited(container.run)).exit_code == 0
    assert orch.app.events.subscribers == 1
    assert orch.app.link.sessions == 4


async def test_the_session_ends_at_shutdown(orch: Orchestrator) -> None:
    await wait_for(lambda: orch.app.events.subscribers == 1)

    await orch.app.stop()

    await orch.control.wait_until(lambda: orch.control.sessions_ended == 1, TIMEOUT)
    assert orch.app.events.subscribers == 0
    with pytest.raises(RuntimeError, match="not started"):
        orch.app.link  # noqa: B018 - the link is gone


def _container(run: str) -> Container:
    return Container(
        run=RunName.parse(f"tenants/t/runs/{run}"),
        container_id="1",
        backend="test",
        state=ContainerState.RUNNING,
        start_time=datetime.now(UTC),
    )


async def test_event_log_is_bounded_and_replays_what_it_keeps() -> None:
    log = EventLog(capacity=3, first_sequence=100)
    for i in range(5):
        log.append(_container(f"r{i}"))
    assert log.last_sequence == 104

    replay = log.subscribe(0)
    got = [await anext(replay) for _ in range(3)]
    await replay.aclose()

    assert [e.sequence for e in got] == [102, 103, 104]
    assert [e.container.run.run_id for e in got] == ["r2", "r3", "r4"]


async def test_event_log_sequences_increase_across_instances() -> None:
    first = EventLog()
    first.append(_container("a"))
    second = EventLog()
    assert second.append(_container("b")).sequence > first.last_sequence


async def test_event_log_close_ends_subscriptions() -> None:
    log = EventLog(first_sequence=1)
    subscription = log.subscribe(0)
    pending = asyncio.ensure_future(anext(subscription))
    await asyncio.sleep(0)  # let it start waiting
    log.close()
    with pytest.raises(Unavailable):
        await pending
    assert log.subscribers == 0
