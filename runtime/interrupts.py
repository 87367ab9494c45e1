"""How a run is interrupted: a Cancel command, whose grace period gives the tool time to stop,
or a terminal state the control plane records that this engine did not propose. The lifecycle
races each of its waits against both."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class RunEnded(Exception):
    """The control plane recorded a terminal state this driver did not propose."""


class CancelRequested(Exception):
    """A Cancel command (or a signal in a development session) arrived."""


class Interrupts:
    """The cancel and end signals of one run, and the waits that give way to them."""

    def __init__(self) -> None:
        # The tool's `ctx.cancelled`: set by a cancel, the run's end or the session's end.
        self.tool_cancelled = threading.Event()
        self._cancel = asyncio.Event()
        self._cancel_reason = ""
        self._cancel_deadline = 0.0
        self._grace_over = asyncio.Event()
        self._ended = asyncio.Event()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def cancel_reason(self) -> str:
        return self._cancel_reason

    @property
    def grace_is_over(self) -> bool:
        return self._grace_over.is_set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def request_cancel(self, reason: str, grace: float) -> None:
        """Cancels the run: `ctx.cancelled` is set; the tool has `grace` seconds to stop (the
        CANCELLED proposal goes out a little before, so it lands before a kill)."""
        if not self._cancel.is_set():
            self._cancel_reason = reason or "cancelled"
            margin = min(1.0, grace * 0.2)
            self._cancel_deadline = time.monotonic() + max(0.0, grace - margin)
        if grace <= 0:
            self._grace_over.set()
        self.tool_cancelled.set()
        self._cancel.set()

    def end_grace(self) -> None:
        """The tool gets no more time to stop (a signal while the run is being cancelled)."""
        self._grace_over.set()

    def end(self) -> None:
        """The control plane recorded a terminal state: the tool is told to stop."""
        self.tool_cancelled.set()
        self._ended.set()

    async def until_done_or_interrupted(self, work: asyncio.Future[Any]) -> None:
        """Until `work` is done, a cancel is requested, or the run ends on the control
        plane, whichever comes first (`work` itself is left running)."""
        cancel = asyncio.create_task(self._cancel.wait())
        ended = asyncio.create_task(self._ended.wait())
        try:
            waiters: set[asyncio.Future[Any]] = {work, cancel, ended}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancel.cancel()
            ended.cancel()

    async def race(self, awaitable: Awaitable[T]) -> T:
        """Awaits `awaitable` unless the run is cancelled (CancelRequested) or ends on the
        control plane (RunEnded) first."""
        work = asyncio.ensure_future(awaitable)
        await self.until_done_or_interrupted(work)
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(BaseException):
            await work
        if self._ended.is_set():
            raise RunEnded
        raise CancelRequested

    async def wait_out_grace(self, work: asyncio.Future[Any]) -> None:
        """After a cancel: until `work` is done or the grace period is over."""
        if work.done():
            return
        grace_over = asyncio.create_task(self._grace_over.wait())
        remaining = max(0.0, self._cancel_deadline - time.monotonic())
        try:
            grace: set[asyncio.Future[Any]] = {work, grace_over}
            await asyncio.wait(grace, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            grace_over.cancel()
