"""What the servers' bidirectional sessions share: the message that must open a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

from google.protobuf.message import Message

from flnet import timeouts
from flnet.errors import FailedPrecondition

M = TypeVar("M", bound=Message)


async def opening(requests: AsyncIterator[M], field: str, what: str, within: float) -> M:
    """The stream's first message, which must set `field` within `within` seconds
    (FailedPrecondition "the stream must open with <what>" otherwise)."""
    try:
        first = await timeouts.wait_for(anext(requests), within)
    except (StopAsyncIteration, TimeoutError):
        raise FailedPrecondition(f"the stream must open with {what}") from None
    if not first.HasField(field):
        raise FailedPrecondition(f"the stream must open with {what}")
    return first
