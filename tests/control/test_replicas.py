"""Control-plane replicas sharing one PostgreSQL: an engine connected to one replica and a
watcher on another see the same events live (PostgreSQL LISTEN/NOTIFY wakes the watcher's
replica, which reads what is new), and no replica takes an engine connected elsewhere for
silent (heartbeat leases are judged by what the engine's replica records); what one replica
decides for a run (a cancel, its end) reaches the engine connected to another, and the
launches either places reach the orchestrator attached to the other, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.orchestrator.v1 import orchestrator_pb2 as op
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control import notifications
from flnet.control.app import ControlApp
from flnet.control.database import create_engine
from flnet.control.notifications import EventNotifications
from flnet.structs import dict_to_struct
from flnet.toolspec import load_tool_spec
from tests.conftest import (
    FIXTURES,
    TENANT,
    Clients,
    clients_for,
    control_app,
    control_settings,
    request_id,
)
from tests.control.hand_engine import HandEngine, connected_engine, log
from tests.control.hand_orchestrator import HandOrchestrator
from tests.postgres import POSTGRESQL, backend, database_url

NOOP = FIXTURES / "tools" / "noop"
S = lc.RunState


@dataclass
class Replica:
    app: ControlApp
    api: Clients  # a client of this replica alone


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Replica, Replica]]:
    if backend() != POSTGRESQL:
        pytest.skip("replicas share a PostgreSQL database: the --database postgresql pass")
    shared = database_url(tmp_path / "shared")
    key = tmp_path / "shared" / "runtime.pem"  # one run-credential key for all replicas
    apps = [
        control_app(
            control_settings(
                tmp_path / name, database_url=shared, heartbeat_lease=2.0, runtime_key_file=key
            )
        )
        for name in ("a", "b")
    ]
    for app in apps:
        await app.start("127.0.0.1:0")
    a, b = (Replica(app, clients_for(f"127.0.0.1:{app.port}")) for app in apps)
    yield a, b
    for replica in (a, b):
        await replica.api.channel.close()
        await replica.app.stop(0.5)


async def initialized_engine(api: Clients) -> HandEngine:
    """The connected engine of a new development run, INITIALIZED, speaking through `api`."""
    engine = await connected_engine(api, NOOP)
    await engine.propose(S.RUN_STATE_INITIALIZED)
    return engine


async def fail(engine: HandEngine) -> None:
    """The engine ends its run in ERROR."""
    failure = lifecycle.make_error(
        lc.ERROR_REASON_TOOL_EXCEPTION, "the end", phase=S.RUN_STATE_INITIALIZED
    )
    await engine.propose(S.RUN_STATE_ERROR, failure)


async def test_a_watcher_on_one_replica_follows_an_engine_on_another(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    engine = await initialized_engine(a.api)
    seen: list[rp.RunEvent] = []
    watching = asyncio.create_task(b.api.watch(engine.run, seen))
    for n in range(5):
        await engine.send_batch(*(log(f"line {n}.{i}") for i in range(100)))
        await asyncio.sleep(0.5)  # longer than the lease in all: B must not call it LOST
        await engine.outgoing.put(rt.ConnectRequest(heartbeat=rt.Heartbeat()))
    async with asyncio.timeout(5):
        while len([e for e in seen if e.HasField("log")]) < 500:  # noqa: ASYNC110 - live
            await asyncio.sleep(0.01)
    state = (await b.api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run.state
    assert state == S.RUN_STATE_INITIALIZED  # alive on every replica
    await fail(engine)
    async with asyncio.timeout(10):
        await watching
    sequences = [e.sequence for e in seen]
    assert sequences == list(range(1, len(sequences) + 1))  # every event once, in order
    logs = [e.log.message for e in seen if e.HasField("log")]
    assert logs == [f"line {n}.{i}" for n in range(5) for i in range(100)]
    await engine.close()


async def test_an_engine_moves_to_another_replica_and_resumes_its_sequence(
    replicas: tuple[Replica, Replica],
) -> None:
    """The engine of a run created on A reconnects to B (A gone from its view): B accepts the
    credential A minted (one shared key), welcomes it at the sequence stored so far, and the
    run goes on there."""
    a, b = replicas
    first = await initialized_engine(a.api)
    await first.send_batch(*(log(f"early {i}") for i in range(10)))
    await first.close()

    moved = HandEngine(b.api, first.run, first.credential)
    welcome = await moved.connect()
    assert welcome.state == S.RUN_STATE_INITIALIZED
    moved.sequence = welcome.acked_sequence  # resume after what was stored
    await moved.send_batch(log("late"))
    await fail(moved)
    events = (await a.api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=first.run))).events
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    logs = [e.log.message for e in events if e.HasField("log")]
    assert logs == [f"early {i}" for i in range(10)] + ["late"]
    await moved.close()


async def test_a_cancel_on_one_replica_reaches_the_engine_on_another(
    replicas: tuple[Replica, Replica],
) -> None:
    """B records the cancel; A, holding the engine, hears of it from the database's
    notification and passes it on at once, with the grace counted from the request."""
    a, b = replicas
    engine = await initialized_engine(a.api)
    await b.api.runs.CancelRun(rs.CancelRunRequest(name=engine.run, reason="enough"))
    # Well before the 2 s grace is over (the supervisors' hard stop comes after it).
    command = (await engine.receive_kind("command", wait=1.5)).command
    assert command.cancel.reason == "enough"
    assert 0.5 < command.cancel.grace_period.ToNanoseconds() / 1e9 <= 2.0
    ack = await engine.propose(S.RUN_STATE_CANCELLED)
    assert ack.state == S.RUN_STATE_CANCELLED
    done = (await b.api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run
    assert done.state == S.RUN_STATE_CANCELLED
    assert done.cancellation.HasField("complete_time")  # the engine's own clean end
    await engine.close()


async def test_an_end_decided_on_one_replica_closes_the_engine_stream_on_another(
    replicas: tuple[Replica, Replica],
) -> None:
    """B hears from the orchestrator that the run's container exited and records the run's
    end; A closes its engine's stream with that outcome instead of taking more batches."""
    a, b = replicas
    engine = await initialized_engine(a.api)
    exited = op.RunContainer(
        run=engine.run,
        state=op.CONTAINER_STATE_EXITED,
        exit_cause=op.EXIT_CAUSE_EXITED,
        exit_code=3,
    )
    await b.app.runs.supervisor.on_container(exited)
    close = (await engine.receive_kind("close", wait=2)).close
    assert close.state == S.RUN_STATE_ERROR
    assert close.reason == "the process exited with code 3"
    await engine.close()


async def test_a_watcher_catches_up_after_its_replica_lost_the_notification_connection(
    replicas: tuple[Replica, Replica],
) -> None:
    """B's listening connection is terminated by the server; what A commits meanwhile is
    notified to nobody on B, yet B's watcher gets it once B listens again."""
    a, b = replicas
    engine = await initialized_engine(a.api)
    seen: list[rp.RunEvent] = []
    watching = asyncio.create_task(b.api.watch(engine.run, seen))
    assert b.app.notifications is not None
    listener = b.app.notifications
    async with asyncio.timeout(5):
        while not seen:  # noqa: ASYNC110 - live
            await asyncio.sleep(0.01)
    async with a.app.engine.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": listener.backend_pid})
    async with asyncio.timeout(5):
        while listener.listening.is_set():  # noqa: ASYNC110 - the loss is noticed
            await asyncio.sleep(0.01)
    await engine.send_batch(log("while B was deaf"))
    async with asyncio.timeout(10):
        await listener.listening.wait()
        while not any(e.log.message == "while B was deaf" for e in seen):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await fail(engine)
    async with asyncio.timeout(10):
        await watching
    assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
    await engine.close()


async def test_the_listener_outlives_its_own_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend() != POSTGRESQL:
        pytest.skip("notifications are PostgreSQL's: the --database postgresql pass")
    monkeypatch.setattr(notifications, "RECONNECT_SECONDS", 0.05)
    monkeypatch.setattr(notifications, "PROBE_SECONDS", 0.1)  # probed, and answered, often
    catch_ups: list[int] = []
    heard: list[str] = []

    def on_missed() -> None:
        catch_ups.append(len(catch_ups))
        if len(catch_ups) == 1:
            raise RuntimeError("the first catch-up fails")

    url = database_url(tmp_path)
    listener = EventNotifications(url, "here", heard.append, on_missed)
    listener.start()
    async with asyncio.timeout(5):
        await listener.listening.wait()
    await asyncio.sleep(0.5)  # several quiet periods, each probed
    assert listener.listening.is_set() and catch_ups == [0, 1]
    engine = create_engine(url)
    async with engine.begin() as conn:
        await notifications.notify(conn, "there", ["r1"])
        await notifications.notify(conn, "here", ["r2"])  # our own: ignored
    await engine.dispose()
    async with asyncio.timeout(5):
        while not heard:  # noqa: ASYNC110 - delivered at commit
            await asyncio.sleep(0.01)
    assert heard == ["r1"]
    await listener.close()


async def test_a_listening_connection_that_stops_answering_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A half-open connection (the database's host gone) reports nothing: the probe of a
    quiet connection, unanswered, makes the listener connect again and catch up."""
    if backend() != POSTGRESQL:
        pytest.skip("notifications are PostgreSQL's: the --database postgresql pass")
    monkeypatch.setattr(notifications, "RECONNECT_SECONDS", 0.05)
    monkeypatch.setattr(notifications, "PROBE_SECONDS", 0.1)
    monkeypatch.setattr(notifications, "PROBE_TIMEOUT", 0.2)
    catch_ups: list[int] = []
    listener = EventNotifications(
        database_url(tmp_path), "here", lambda run_id: None, lambda: catch_ups.append(1)
    )
    listener.start()
    async with asyncio.timeout(5):
        await listener.listening.wait()
    first = listener.backend_pid
    answering = asyncpg.Connection.fetchval

    async def unanswered(self: asyncpg.Connection, *args: Any, **kw: Any) -> Any:
        await asyncio.Event().wait()  # never answers

    monkeypatch.setattr(asyncpg.Connection, "fetchval", unanswered)
    async with asyncio.timeout(5):
        # The new connection catches up with what it may have missed.
        while len(catch_ups) < 2:  # noqa: ASYNC110 - replaced
            await asyncio.sleep(0.01)
    monkeypatch.setattr(asyncpg.Connection, "fetchval", answering)
    assert listener.backend_pid not in (0, first)
    await listener.close()


async def test_runs_placed_by_replicas_reach_an_orchestrator_attached_to_another_once(
    replicas: tuple[Replica, Replica],
) -> None:
    """The orchestrator is attached to A; runs are created on B, whose placement pass (or
    A's: both run, serialized by the database) places them; the launches reach the
    orchestrator through A (B notifies A), each once, never beyond its capacity."""
    a, b = replicas
    orchestrator = HandOrchestrator(f"127.0.0.1:{a.app.port}", "edge", slots=6)
    await orchestrator.attach()
    version = (
        await b.api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/noop",
                tool_version=load_tool_spec(NOOP).with_image("flnet/noop:1", "sha256:" + "0" * 64),
            )
        )
    ).tool_version
    artifact = await b.api.upload(b"a,b\n1,2\n")
    created = []
    for _ in range(10):
        run = rp.Run(
            tool_version=version.name,
            config=dict_to_struct({"rate": 0.5}),
            inputs=[rp.RunInput(name="data", artifact=artifact)],
        )
        request = rs.CreateRunRequest(parent=TENANT, request_id=request_id(), run=run)
        created.append((await b.api.runs.CreateRun(request)).run.name)
    await orchestrator.wait(lambda: len(orchestrator.launches()) == 6)
    await asyncio.sleep(2.5)  # both replicas pass again: nothing more
    launches = [c.launch.run for c in orchestrator.commands if c.HasField("launch")]
    assert len(orchestrator.launches()) == 6 and set(launches) <= set(created)
    placed = [(await a.api.runs.GetRun(rs.GetRunRequest(name=n))).run for n in created]
    assert sum(r.orchestrator == "orchestrators/edge" for r in placed) == 6
    assert sorted(r.queue.position for r in placed if r.HasField("queue")) == [1, 2, 3, 4]
    await orchestrator.close()
