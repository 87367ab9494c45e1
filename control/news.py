"""What runs have just committed, in this process: wakes their watchers without polling, and
keeps each run's latest history segments so that live watchers read from memory instead of
the database.

A watcher takes `feed.next(run_id)` *before* reading, reads, and only then waits: whatever is
committed after its read sets the event it holds, so nothing is missed. The kept segments of
a run are always contiguous (a segment that does not continue them starts them afresh), so
reading from them can never skip an event; what they do not cover is read from the store.

With several control-plane replicas on one PostgreSQL, a run's events may be committed by
another replica: its transaction notifies (control.notifications), and `wake` sets the
watchers here, who then read what is new from the database."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    """Consecutive events first..last of a run, as stored (a serialized RunEventSegment)."""

    first: int
    last: int
    payload: bytes
    telemetry: bool = False  # logs, metrics and progress only (no state change among them)


class RunFeed:
    def __init__(
        self, segments_per_run: int = 32, runs: int = 64, bytes_per_run: int = 4 * 1024 * 1024
    ) -> None:
        # Weak: an event nobody waits for any more (its run ended) goes away by itself.
        self._events: weakref.WeakValueDictionary[str, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )
        self._recent: OrderedDict[str, deque[Segment]] = OrderedDict()
        self._per_run = segments_per_run
        self._runs = runs
        self._bytes_per_run = bytes_per_run
        # Names this process in notifications, so that it ignores its own.
        self.origin = uuid.uuid4().hex[:16]

    def next(self, run_id: str) -> asyncio.Event:
        """The event that the next publish for `run_id` sets."""
        ev = self._events.get(run_id)
        if ev is None:
            ev = self._events[run_id] = asyncio.Event()
        return ev

    def publish(self, run_id: str, segments: list[Segment]) -> None:
        """Called after the commit that stored `segments` (in sequence order)."""
        recent = self._recent.get(run_id)
        if recent is None:
            recent = self._recent[run_id] = deque(maxlen=self._per_run)
            if len(self._recent) > self._runs:
                self._recent.popitem(last=False)
        self._recent.move_to_end(run_id)
        for segment in segments:
            if recent and recent[-1].last + 1 != segment.first:
                recent.clear()
            recent.append(segment)
        # Bounded memory: drop the oldest (a watcher that far behind reads the database).
        while len(recent) > 1 and sum(len(s.payload) for s in recent) > self._bytes_per_run:
            recent.popleft()
        ev = self._events.pop(run_id, None)
        if ev is not None:
            ev.set()

    def wake(self, run_id: str) -> None:
        """Another replica committed events of `run_id`: what we kept of it is no longer all
        there is (dropped), and its watchers read the new events from the store."""
        self._recent.pop(run_id, None)
        ev = self._events.pop(run_id, None)
        if ev is not None:
            ev.set()

    def wake_all(self) -> None:
        """Notifications may have been missed (the listening connection was lost): every
        watcher reads again."""
        events, self._events = list(self._events.values()), weakref.WeakValueDictionary()
        for ev in events:
            ev.set()

    def recent(self, run_id: str, after: int) -> list[Segment] | None:
        """The kept segments holding every committed event after `after`, or None when they
        do not reach back that far (read the store instead)."""
        recent = self._recent.get(run_id)
        if not recent or recent[0].first > after + 1:
            return None
        return [s for s in recent if s.last > after]

    def forget(self, run_id: str) -> None:
        """Drops what is kept of `run_id` (its engine left this replica: the next events may
        be committed by another)."""
        self._recent.pop(run_id, None)
