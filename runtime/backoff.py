"""Retry timing for the engine's calls to the control plane: 100 ms doubling to 2 s, with
jitter, within a total budget; and which gRPC status codes are worth retrying."""

from __future__ import annotations

import random
import time

import grpc

# Codes that say "the control plane is (temporarily) not there"; anything else is an answer.
RETRYABLE: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def is_retryable(code: grpc.StatusCode | None) -> bool:
    return code is None or code in RETRYABLE


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
