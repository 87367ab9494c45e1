"""A run's history: events stored as segments (one row per transaction), and reading
them back into any message with `repeated RunEvent events = 1`."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from sqlalchemy import func, select

from flnet import lifecycle
from flnet.api.control.v1 import run_pb2 as rp
from flnet.control.news import Segment
from flnet.control.schema import run_events
from flnet.control.store.base import Database, Pending, RunRow

# Segments fetched per query while listing events: a few, since one holds up to a batch.
SEGMENTS_PER_READ = 4
# Stored bytes merged into one response at most (the message limit is 8 MiB; a segment holds
# one engine batch, at most 2 MiB).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# How every storage_uri starts (LocalBlobStore, S3BlobStore): a segment without these bytes
# holds none.
_STORAGE_URI_STARTS = (b"file:/", b"s3://")


class EventList(Protocol):
    """A message whose field 1 is `repeated RunEvent events`."""

    @property
    def events(self) -> RepeatedCompositeFieldContainer[rp.RunEvent]: ...

    def MergeFromString(self, serialized: bytes) -> int: ...


class EventsRead(NamedTuple):
    added: int
    full: bool
    ended: bool  # a terminal state change was among the events added


class _EventReader:
    """Merges stored segments into a response, keeping events after `after`, up to `limit`,
    and fills in what storage leaves out (run name, sequence number)."""

    def __init__(self, into: EventList, run: str, after: int, limit: int) -> None:
        self.into, self.run, self.after, self.limit = into, run, after, limit
        self.added = 0
        self.bytes = 0
        self.ended = False  # a terminal state change was added

    @property
    def full(self) -> bool:
        # A response must fit a gRPC message: stop at a few MiB whatever the count.
        return self.added >= self.limit or self.bytes >= MAX_RESPONSE_BYTES

    def take(
        self, first: int, payload: bytes, *, stored: bool = False, telemetry: bool = False
    ) -> bool:
        """Adds a segment's events; True once `limit` events were added. A `stored` segment
        (read from the database) may be older than the rule that output events are recorded
        without their storage_uri (ArtifactStore): such a URI is cleared. A `telemetry`
        segment holds no state change: it is not looked through for the run's end."""
        events = self.into.events
        start = len(events)
        self.into.MergeFromString(payload)
        skip = max(0, self.after - first + 1)
        if skip:
            del events[start : start + skip]
        extra = self.added + (len(events) - start) - self.limit
        if extra > 0:
            del events[len(events) - extra :]
        sequence, run = first + skip, self.run
        if telemetry:
            for ev in events[start:]:  # (per event: plain stores only)
                ev.sequence = sequence
                ev.run = run
                sequence += 1
        else:
            for ev in events[start:]:
                ev.sequence = sequence
                ev.run = run
                sequence += 1
                if ev.HasField("state_change") and lifecycle.is_terminal(ev.state_change.to_state):
                    self.ended = True
        if stored and any(mark in payload for mark in _STORAGE_URI_STARTS):
            for ev in events[start:]:
                if ev.HasField("output"):
                    ev.output.ClearField("storage_uri")
        taken = len(events) - start
        self.added += taken
        self.bytes += len(payload)
        self.after = first + skip + taken - 1 if taken else self.after
        return self.full

    @property
    def result(self) -> EventsRead:
        return EventsRead(self.added, self.full, self.ended)


class HistoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def read_events(
        self, run: RunRow, into: EventList, *, after: int, limit: int
    ) -> EventsRead:
        """Appends up to `limit` events with a sequence above `after`, in order, to
        `into.events` and says how many, whether it stopped because the response was full (by
        count or size: more may follow at once), and whether the run's end was among them.
        `into` is any message whose field 1 is
        `repeated RunEvent events` (WatchRunResponse, ListRunEventsResponse): segments merge
        into it as bytes, without copying event by event. Recent segments come from memory."""
        reader = _EventReader(into, run.name, after, limit)
        for segment in self.db.feed.recent(run.id, after) or ():
            if reader.take(segment.first, segment.payload, telemetry=segment.telemetry):
                return reader.result
        if reader.added:
            return reader.result
        # Nothing in memory (never published, or published out of order): the database.
        async with self.db.read() as conn:
            while not reader.full:
                rows = (
                    await conn.execute(
                        select(run_events.c.payload, run_events.c.first_seq)
                        .where(run_events.c.run_id == run.id, run_events.c.last_seq > reader.after)
                        .order_by(run_events.c.last_seq)
                        .limit(SEGMENTS_PER_READ)
                    )
                ).all()
                for r in rows:
                    if reader.take(r.first_seq, r.payload, stored=True):
                        break
                if len(rows) < SEGMENTS_PER_READ:
                    break
        return reader.result

    async def count_events(self, run_id: str) -> int:
        async with self.db.read() as conn:
            total = (
                await conn.execute(
                    select(func.sum(run_events.c.last_seq - run_events.c.first_seq + 1)).where(
                        run_events.c.run_id == run_id
                    )
                )
            ).scalar_one()
        return int(total or 0)


def append_events(pending: Pending, run_id: str, now: int, events: list[rp.RunEvent]) -> None:
    """Appends consecutive events as one segment of the run's history: a run's history is a
    sequence of segments, one per engine batch or transaction (a batch of 1000 log lines
    costs one row). Events are stored without `run` and `sequence`; a segment's events are
    numbered first, first + 1, ... (read_events fills both in). The row is inserted with the
    transaction's others just before it commits (Database._write)."""
    payload = rp.RunEventSegment(events=events).SerializeToString()
    pending.add(run_id, now, Segment(events[0].sequence, events[-1].sequence, payload))
