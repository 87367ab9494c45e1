"""Log lines that a flood of calls cannot multiply: one line per key per interval, the rest
counted and reported with the next line that gets through. For what clients can cause at
will (malformed requests), so the log stays readable and its size bounded."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable


class Throttle:
    """Lets one line per `interval` seconds through for each key, and counts the others.

    Keys must come from a bounded set (method names, not client data): one entry is kept
    per key."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        # key -> (when its last line went out, lines suppressed since)
        self._state: dict[Hashable, tuple[float, int]] = {}

    def log(self, level: int, key: Hashable, message: str, *args: object) -> bool:
        """Logs `message % args` unless a line of `key` went out less than `interval`
        seconds ago; True when it did. A line that follows suppressed ones says how many."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        last, suppressed = self._state.get(key, (None, 0))
        if last is not None and now - last < self.interval:
            self._state[key] = (last, suppressed + 1)
            return False
        self._state[key] = (now, 0)
        if suppressed:
            message += " (and %d more like it in the last %.0f s, not logged)"
            args = (*args, suppressed, now - last if last is not None else 0.0)
        self.logger.log(level, message, *args)
        return True
