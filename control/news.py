"""In-process notification that a run has new events, so watchers wake without polling.

A watcher takes `news.next(run_id)` *before* reading the store, reads, and only then waits:
whatever is committed after its read sets the event it holds, so nothing is missed. With
several control-plane replicas, PostgreSQL LISTEN/NOTIFY feeds `publish` (issue 5)."""

from __future__ import annotations

import asyncio


class RunNews:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def next(self, run_id: str) -> asyncio.Event:
        """The event that the next publish for `run_id` sets."""
        ev = self._events.get(run_id)
        if ev is None:
            ev = self._events[run_id] = asyncio.Event()
        return ev

    def publish(self, run_id: str) -> None:
        ev = self._events.pop(run_id, None)
        if ev is not None:
            ev.set()
