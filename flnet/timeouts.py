"""Waiting with a time limit without losing a cancellation.

Python 3.11's `asyncio.wait_for` returns the awaited result when the result and a
cancellation arrive in the same step, and the cancellation is gone: a background loop
built on it (wait for a kick or the interval, work, wait again) then never ends, and
whoever cancelled it to shut down waits for ever. `asyncio.timeout` counts the task's
cancellations and keeps the caller's (3.12 made `wait_for` do the same).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(awaitable: Awaitable[T], seconds: float | None) -> T:
    """`awaitable`'s result, or TimeoutError after `seconds` (None: no limit). A cancellation
    of the caller always propagates, and the awaitable is cancelled with it."""
    async with asyncio.timeout(seconds):
        return await awaitable
