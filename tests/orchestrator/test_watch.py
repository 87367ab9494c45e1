"""WatchContainers: replay after a sequence without gaps or duplicates, concurrent
watchers, clean-up on disconnect, shutdown; and the EventLog underneath."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import grpc
import pytest

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.orchestrator.backend import Container, ContainerState, RunName
from flnet.orchestrator.errors import Unavailable
from flnet.orchestrator.events import EventLog
from tests.orchestrator.helpers import TIMEOUT, Orchestrator, wait_for


async def take(
    orch: Orchestrator, after_sequence: int, count: int
) -> list[pb.WatchContainersResponse]:
    events: list[pb.WatchContainersResponse] = []
    async with asyncio.timeout(TIMEOUT):
        async for event in orch.watch(after_sequence):
            events.append(event)
            if len(events) == count:
                return events
    raise AssertionError("the watch ended")


async def test_replay_after_sequence_has_no_gaps_and_no_duplicates(orch: Orchestrator) -> None:
    runs = [(await orch.launch(f"print({i})")).run for i in range(3)]
    for run in runs:
        await orch.exited(run)

    history = await take(orch, 0, 6)

    sequences = [e.sequence for e in history]
    assert sequences == list(range(sequences[0], sequences[0] + 6))
    assert sorted((e.container.run, e.container.state) for e in history) == sorted(
        (run, state)
        for run in runs
        for state in (pb.CONTAINER_STATE_RUNNING, pb.CONTAINER_STATE_EXITED)
    )
    # Resuming after the third event gives exactly the rest.
    assert await take(orch, sequences[2], 3) == history[3:]
    # Resuming at the end gives only what happens next.
    later = await orch.launch("pass")
    resumed = await take(orch, sequences[-1], 2)
    assert [e.sequence for e in resumed] == [sequences[-1] + 1, sequences[-1] + 2]
    assert [e.container.run for e in resumed] == [later.run, later.run]


async def test_two_watchers_see_the_same_live_events(orch: Orchestrator) -> None:
    after = orch.app.events.last_sequence
    first = asyncio.create_task(take(orch, after, 4))
    second = asyncio.create_task(take(orch, after, 4))
    await wait_for(lambda: orch.app.events.subscribers == 2)

    a = await orch.launch("pass")
    b = await orch.launch("raise SystemExit(2)")

    seen_first, seen_second = await first, await second
    assert seen_first == seen_second
    assert [e.sequence for e in seen_first] == list(range(after + 1, after + 5))
    exits = {
        e.container.run: e.container.exit_code
        for e in seen_first
        if e.container.state == pb.CONTAINER_STATE_EXITED
    }
    assert exits == {a.run: 0, b.run: 2}


async def test_a_watcher_that_goes_away_is_cleaned_up(orch: Orchestrator) -> None:
    call = orch.stub.WatchContainers(pb.WatchContainersRequest())
    container = await orch.launch("pass")
    first = await call.read()
    assert isinstance(first, pb.WatchContainersResponse)
    assert first.container.run == container.run
    assert orch.app.events.subscribers == 1

    call.cancel()

    await wait_for(lambda: orch.app.events.subscribers == 0)


async def test_watchers_get_unavailable_at_shutdown(orch: Orchestrator) -> None:
    call = orch.stub.WatchContainers(pb.WatchContainersRequest())
    await wait_for(lambda: orch.app.events.subscribers == 1)

    await orch.app.stop()

    with pytest.raises(grpc.aio.AioRpcError) as info:
        async with asyncio.timeout(TIMEOUT):
            async for _ in call:
                pass
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


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
