"""flnet.timeouts.wait_for: a result, a timeout, and a cancellation that is never lost."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable

import pytest

from flnet import timeouts

WaitFor = Callable[[Awaitable[bool], float], Awaitable[bool]]


async def _loop_cancelled_as_it_is_kicked(wait_for: WaitFor) -> bool:
    """A loop that waits for a kick (or 5 s), kicked in the very step it is cancelled:
    True if the cancellation ended it."""
    kicked = asyncio.Event()

    async def loop() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await wait_for(kicked.wait(), 5)
            kicked.clear()
            await asyncio.sleep(0)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    kicked.set()
    await asyncio.sleep(0)  # the kick's waiter completes in this step
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return bool(done) and task.cancelled()


async def test_it_returns_the_result_within_the_time() -> None:
    assert await timeouts.wait_for(asyncio.sleep(0, "done"), 1) == "done"


async def test_it_raises_timeout_and_cancels_what_it_awaited_after_the_time() -> None:
    slow = asyncio.ensure_future(asyncio.sleep(10))
    with pytest.raises(TimeoutError):
        await timeouts.wait_for(slow, 0.05)
    assert slow.cancelled()


async def test_a_cancellation_in_the_step_of_the_result_ends_a_loop() -> None:
    assert await _loop_cancelled_as_it_is_kicked(timeouts.wait_for)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12's wait_for keeps it")
async def test_asyncio_wait_for_loses_that_cancellation_on_this_python() -> None:
    """Why the module exists: when this fails, asyncio.wait_for can be used again."""
    assert not await _loop_cancelled_as_it_is_kicked(asyncio.wait_for)  # noqa: TID251
