"""An in-memory container event log: every state change gets an orchestrator-wide,
increasing sequence; subscribers (the control link, which turns each event into a report)
replay what they missed, then follow live events.

Sequences start at the wall-clock time in microseconds when the log is created and grow by
one per event. The log is bounded: a subscriber that fell further behind than `capacity`
events misses the evicted ones (logged as a warning); the control plane learns of those runs
from the containers the orchestrator registers with, and from their engines."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator

from .backend import Container, ContainerEvent
from .errors import Reason, Unavailable

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000


class EventLog:
    """Append-only, bounded, replayable. Use it from one event loop."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, first_sequence: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._events: deque[ContainerEvent] = deque(maxlen=capacity)
        self._next = first_sequence if first_sequence is not None else time.time_ns() // 1000
        self._evicted = False  # whether capacity ever dropped an event
        # Replaced on every append: waiters hold the old one, which is set.
        self._changed = asyncio.Event()
        self._closed = False
        self._subscribers = 0

    @property
    def last_sequence(self) -> int:
        """Sequence of the newest event; one less than the first when there is none."""
        return self._next - 1

    @property
    def subscribers(self) -> int:
        """Number of watchers currently subscribed."""
        return self._subscribers

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, container: Container) -> ContainerEvent:
        """Records a state change and wakes the watchers. Appending after close is allowed
        (the event is kept, nobody is woken)."""
        event = ContainerEvent(self._next, container)
        self._next += 1
        if len(self._events) == self._events.maxlen:
            self._evicted = True
        self._events.append(event)
        self._wake()
        return event

    def close(self) -> None:
        """Ends every subscription with Unavailable; new ones fail at once."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _after(self, sequence: int) -> list[ContainerEvent]:
        if not self._events or sequence >= self._events[-1].sequence:
            return []
        first = self._events[0].sequence
        if self._evicted and sequence + 1 < first:
            log.warning(
                "watcher asked for events after %d; %d..%d were evicted",
                sequence,
                sequence + 1,
                first - 1,
            )
        start = max(0, sequence + 1 - first)
        return list(itertools.islice(self._events, start, None))

    async def subscribe(self, after_sequence: int = 0) -> AsyncGenerator[ContainerEvent, None]:
        """Events with sequence > after_sequence still retained, then live ones; raises
        Unavailable once the log is closed."""
        self._subscribers += 1
        try:
            cursor = after_sequence
            while True:
                if self._closed:
                    raise Unavailable("the orchestrator is shutting down", Reason.SHUTTING_DOWN)
                changed = self._changed
                batch = self._after(cursor)
                if not batch:
                    await changed.wait()
                    continue
                for event in batch:
                    cursor = event.sequence
                    yield event
        finally:
            self._subscribers -= 1
