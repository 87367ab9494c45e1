"""Reading ahead: a stream's next chunks are fetched while the current ones are being sent
on, so a slow consumer and a distant source overlap instead of taking turns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing


async def read_ahead(
    chunks: AsyncGenerator[bytes, None], depth: int
) -> AsyncGenerator[bytes, None]:
    """Yields what `chunks` yields, keeping up to `depth` chunks fetched in advance."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(depth)
    failure: list[Exception] = []

    async def fill() -> None:
        try:
            async with aclosing(chunks):
                async for chunk in chunks:
                    await queue.put(chunk)
        except Exception as e:
            failure.append(e)
        await queue.put(None)

    filler = asyncio.create_task(fill())
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
        if failure:
            raise failure[0]
    finally:
        filler.cancel()
        await asyncio.wait([filler])
