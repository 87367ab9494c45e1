"""Watching a run: its stored history, then live events as they commit. The store is the only
source (the feed only says when to read again), so the stream has no gap and no duplicate
however events and reads interleave."""

from __future__ import annotations

from collections.abc import AsyncIterator

from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.control.store import RunRow, Store

# Most events one response carries.
WATCH_BATCH = 4000


async def watch(
    store: Store, row: RunRow, after_sequence: int
) -> AsyncIterator[rs.WatchRunResponse]:
    """Events of `row` after `after_sequence`, until the run's end has been streamed."""
    cursor = after_sequence
    # The run's end was streamed, or it had ended before the watch began: from here on,
    # every read that leaves the stream caught up checks whether all has been streamed.
    saw_end = row.terminal
    ended = False  # the run had ended before the latest read
    while True:
        news = store.feed.next(row.id)
        response = rs.WatchRunResponse()
        count, full, ended_here = await store.history.read_events(
            row, response, after=cursor, limit=WATCH_BATCH
        )
        if count:
            cursor = response.events[-1].sequence
            saw_end = saw_end or ended_here
            yield response
            if full:
                continue
            if not saw_end:
                # Caught up with a live run: what commits after the read sets `news`.
                await news.wait()
                continue
        # Caught up with what was stored at the read: has the run's stream ended? Events
        # may follow the terminal change (telemetry the engine flushed as it ended), and
        # gc may have dropped telemetry up to the run's last sequence: an ended run whose
        # read after its end found nothing more has been streamed whole.
        fresh = await store.runs.get_run_by_id(row.id)
        if fresh is None or (fresh.terminal and (ended or cursor >= fresh.last_sequence)):
            return
        ended = fresh.terminal
        if cursor < fresh.last_sequence:
            continue
        await news.wait()
