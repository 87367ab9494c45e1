"""Retry timing for the engine's calls to the control plane: 100 ms doubling to 2 s, with
jitter, within a total budget; and which failures are worth retrying: only what the status
and its RetryInfo say may succeed later."""

from __future__ import annotations

import random
import time

import grpc

from .status_details import status_details

# Codes of a failure the control plane did not answer with an error of its own (no ErrorInfo):
# it is (temporarily) not there, or the stream broke on the way.
RETRYABLE: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
    }
)


def retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    """Seconds to wait at least before repeating the failed call (0: as the backoff says),
    or None when repeating it cannot help. An error the control plane answered (ErrorInfo)
    is final unless it carries a RetryInfo: a RESOURCE_EXHAUSTED for an output over its
    limit is final, one for a tenant over its rate is not."""
    details = status_details(exc)
    if details.retry_delay is not None:
        return details.retry_delay
    if details.error_info:
        return None
    return 0.0 if exc.code() in RETRYABLE else None


class Backoff:
    """Delays between attempts. `next_delay()` returns None once `budget` seconds have passed
    since the last `reset()` (the last time the control plane answered)."""

    def __init__(
        self,
        *,
        initial: float = 0.1,
        maximum: float = 2.0,
        jitter: float = 0.2,
        budget: float = 300.0,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.budget = budget
        self._delay = initial
        self._since = time.monotonic()

    def reset(self) -> None:
        self._delay = self.initial
        self._since = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._since

    def next_delay(self) -> float | None:
        left = self.budget - self.elapsed
        if left <= 0:
            return None
        delay = self._delay * (1.0 + random.uniform(-self.jitter, self.jitter))
        self._delay = min(self._delay * 2, self.maximum)
        return max(0.0, min(delay, left))
