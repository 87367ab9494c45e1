"""Run-event notifications between control-plane replicas sharing one PostgreSQL.

A transaction that stores a run's events also runs `pg_notify(CHANNEL, "<origin> <run_id>")`;
PostgreSQL delivers it when (and only if) the transaction commits, to every connection that
LISTENs. Each replica keeps one such connection (EventNotifications) and wakes the run's
watchers (RunFeed.wake), who read the new events from the database: a watcher on one replica
follows an engine connected to another live, without polling. The replica holding the run's
engine passes on to it what another replica decided (RunController.on_remote_change: a cancel,
the run's end). A replica ignores its own notifications (its feed was told already). When the
listening connection is lost it is re-established, and every watcher and held engine catches
up, since notifications may have been missed.
The same connection listens on FLEET_CHANNEL, "<origin> <orchestrator>": an orchestrator has
commands to get (a run placed on it, a stop), which the replica holding its session sends
(control.runs.fleet_sessions).
SQLite has one control plane and needs none of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flnet import timeouts

log = logging.getLogger(__name__)

CHANNEL = "flnet_run_events"
NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', :payload)")
FLEET_CHANNEL = "flnet_fleet"
NOTIFY_FLEET = text(f"SELECT pg_notify('{FLEET_CHANNEL}', :payload)")
RECONNECT_SECONDS = 1.0
# How long the listening connection may stay quiet before a query checks that it still works,
# and how long that query may take.
PROBE_SECONDS = 10.0
PROBE_TIMEOUT = 10.0


async def notify(conn: AsyncConnection, origin: str, run_ids: Iterable[str]) -> None:
    """Inside a write transaction: tells the other replicas, at commit, that these runs have
    new events."""
    for run_id in sorted(set(run_ids)):
        await conn.execute(NOTIFY, {"payload": f"{origin} {run_id}"})


async def notify_fleet(engine: AsyncEngine, origin: str, orchestrator: str) -> None:
    """Tells the other replicas that `orchestrator` has commands to get."""
    async with engine.begin() as conn:
        await conn.execute(NOTIFY_FLEET, {"payload": f"{origin} {orchestrator}"})


class EventNotifications:
    """LISTENs on CHANNEL for as long as it runs (`start()` / `close()`): `on_change(run_id)`
    for every run another replica wrote, `on_missed()` whenever notifications may have been
    missed (at the start of each listening connection)."""

    def __init__(
        self,
        database_url: str,
        origin: str,
        on_change: Callable[[str], None],
        on_missed: Callable[[], None],
        on_fleet: Callable[[str], None] = lambda orchestrator: None,
    ) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._origin = origin
        self._on_change = on_change
        self._on_missed = on_missed
        self._on_fleet = on_fleet
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        self.backend_pid = 0  # of the listening connection, while there is one

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_notification(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        origin, _, subject = payload.partition(" ")
        if origin == self._origin:
            return
        if channel == FLEET_CHANNEL:
            self._on_fleet(subject)
        else:
            self._on_change(subject)

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except Exception as e:  # whatever it was, this replica must not stay deaf
                log.warning("listening for run events failed (%r); reconnecting", e)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen(self) -> None:
        """One listening connection, until it is lost."""
        lost = asyncio.Event()
        # Named, so that operators can tell it in pg_stat_activity.
        conn = await asyncpg.connect(self._dsn, server_settings={"application_name": CHANNEL})
        try:
            self.backend_pid = conn.get_server_pid()
            conn.add_termination_listener(lambda _: lost.set())
            await conn.add_listener(CHANNEL, self._on_notification)
            await conn.add_listener(FLEET_CHANNEL, self._on_notification)
            self._on_missed()  # whatever committed while nobody listened
            self.listening.set()
            while True:
                with contextlib.suppress(TimeoutError):
                    await timeouts.wait_for(lost.wait(), PROBE_SECONDS)
                    break
                # Quiet for a while: a half-open connection (the database's host gone) never
                # reports its loss, a query that gets no answer does.
                await timeouts.wait_for(conn.fetchval("SELECT 1"), PROBE_TIMEOUT)
            log.warning("the run-event notification connection was lost; reconnecting")
        finally:
            self.listening.clear()
            self.backend_pid = 0
            with contextlib.suppress(Exception):
                await timeouts.wait_for(conn.close(), 5)
