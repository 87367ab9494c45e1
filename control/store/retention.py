"""What `flnet gc` reads and deletes in the database (control.retention decides what and
when): input artifacts no run or tool version references, the telemetry in the history of
runs that ended long ago, expired resumable uploads.

gc runs beside live control planes, usually in a process of its own. Every deletion is a
short transaction of its own that re-checks its condition as it deletes, under the row's lock,
so that what a control plane does meanwhile wins:

- A run referencing an input inserts its run_inputs row in the transaction that creates it.
  Its foreign key check locks the artifact's row (KEY SHARE) on PostgreSQL: gc's DELETE
  waits for that transaction, and fails on the key if the run committed (its NOT EXISTS saw
  the references as they were when the statement began; the key sees them as they are). A
  DELETE that went first makes the run's insert fail instead (CreateRun: NOT_FOUND).
- An upload of content stored already refreshes that input's uploaded_us; gc's DELETE
  requires uploaded_us before the cutoff, which PostgreSQL re-evaluates on the row as the
  refresh committed it. Either the refresh finds the row and gc spares it, or gc's delete
  committed first and the upload records the content anew.
- SQLite runs one writer at a time. The control plane's write lock is per process, so gc's
  transactions take the database's own at their start (BEGIN IMMEDIATE): what gc reads stays
  true until it commits, and the other process's writers wait for it (busy timeout).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.control.blobs.protocol import Blob
from flnet.control.clock import now_us
from flnet.control.news import Segment
from flnet.control.schema import artifacts, run_events, run_inputs, runs, tool_versions, uploads
from flnet.control.store.base import Database

# RunEvent kinds that are telemetry; every other kind (state changes, outputs, cancellation,
# configuration changes, and kinds this version does not know) is provenance and is kept.
TELEMETRY = frozenset({"log", "metric", "progress"})
# History segments read per query while dropping a run's telemetry: a few, since one holds
# up to an engine batch (2 MiB).
SEGMENTS_PER_READ = 4
# History segments one transaction of gc reads (and rewrites those holding telemetry): on
# SQLite it holds the database's write lock meanwhile, which every other writer waits for.
SEGMENTS_PER_TRANSACTION = 16


@dataclass(frozen=True)
class StaleInput:
    """An input artifact no run or tool version references, last uploaded before the cutoff."""

    id: str
    tenant: str
    blob: Blob
    uploaded_us: int


@dataclass(frozen=True)
class EndedRun:
    """A run that ended (at `end_us`) and still has its telemetry."""

    id: str
    end_us: int


@dataclass(frozen=True)
class Dropped:
    """What dropping a run's telemetry removed (or would remove) from its history."""

    events: int
    bytes: int

    def __add__(self, other: Dropped) -> Dropped:
        return Dropped(self.events + other.events, self.bytes + other.bytes)


@dataclass(frozen=True)
class ExpiredUpload:
    id: str
    size: int  # bytes received


def _stale(cutoff_us: int) -> ColumnElement[bool]:
    """Never NULL, so that its negation is what stays: a row without uploaded_us is never
    collected."""
    return and_(
        artifacts.c.direction == ap.ARTIFACT_DIRECTION_INPUT,
        artifacts.c.uploaded_us.is_not(None),
        artifacts.c.uploaded_us < cutoff_us,
        ~exists().where(run_inputs.c.artifact_id == artifacts.c.id),
        ~exists().where(tool_versions.c.source_artifact_id == artifacts.c.id),
    )


def _stale_input(r: Any) -> StaleInput:
    blob = Blob(r.storage_uri, r.sha256, r.size_bytes)
    return StaleInput(id=r.id, tenant=r.tenant, blob=blob, uploaded_us=r.uploaded_us)


def without_telemetry(first_seq: int, payload: bytes) -> list[Segment] | None:
    """The segments that replace a stored one (events first_seq, first_seq + 1, ...) once its
    telemetry is dropped, or None when it holds no telemetry. Each run of consecutive events
    kept becomes a segment of its own, numbered as before: every segment stays without gaps
    (what readers number events by), only the history between segments has some."""
    events = rp.RunEventSegment.FromString(payload).events
    kinds = [event.WhichOneof("event") for event in events]
    if TELEMETRY.isdisjoint(kinds):
        return None
    segments: list[Segment] = []
    kept: list[rp.RunEvent] = []
    for offset, (event, kind) in enumerate(zip(events, kinds, strict=True)):
        if kind not in TELEMETRY:
            kept.append(event)
        elif kept:
            segments.append(_segment(first_seq + offset - len(kept), kept))
            kept = []
    if kept:
        segments.append(_segment(first_seq + len(events) - len(kept), kept))
    return segments


def _segment(first: int, events: list[rp.RunEvent]) -> Segment:
    payload = rp.RunEventSegment(events=events).SerializeToString()
    return Segment(first, first + len(events) - 1, payload)


class RetentionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.asynccontextmanager
    async def gc_write(self) -> AsyncIterator[AsyncConnection]:
        """One of gc's write transactions; on SQLite it holds the database's write lock from
        its start (see the module's docstring)."""
        async with self.db.write() as conn:
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    # ------------------------------------------------------------------------- inputs

    async def stale_inputs(
        self, cutoff_us: int, *, after: StaleInput | None = None, limit: int = 500
    ) -> list[StaleInput]:
        """Input artifacts no run or tool version references, last uploaded before `cutoff_us`, by
        (uploaded_us, id) after `after` (the last of the previous page): each page is a range
        of ix_artifacts_direction_uploaded from where the previous one ended."""
        q = select(artifacts).where(_stale(cutoff_us))
        if after is not None:
            key = tuple_(artifacts.c.uploaded_us, artifacts.c.id)
            q = q.where(key > tuple_(after.uploaded_us, after.id))
        q = q.order_by(artifacts.c.uploaded_us, artifacts.c.id).limit(limit)
        async with self.db.read() as conn:
            return [_stale_input(r) for r in (await conn.execute(q)).all()]

    async def delete_stale_input(self, artifact_id: str, cutoff_us: int) -> StaleInput | None:
        """Deletes the input if it is still stale (nothing references it, not uploaded again
        since `cutoff_us`); None when it is not (any more), or no longer exists."""
        try:
            async with self.gc_write() as conn:
                return await delete_stale_input(conn, artifact_id, cutoff_us)
        except IntegrityError:
            # A run referencing it committed while this delete waited for its row.
            return None

    async def recorded(
        self, uris: Collection[str], shas: Collection[str], *, ignore_stale_before: int = 0
    ) -> set[str]:
        """Those of `uris` and `shas` that an artifact records (as its storage URI or its
        sha256). With `ignore_stale_before`, artifacts that are stale inputs at that cutoff do
        not count (what would remain after gc)."""
        if not uris and not shas:
            return set()
        q = select(artifacts.c.storage_uri, artifacts.c.sha256).where(
            or_(artifacts.c.storage_uri.in_(list(uris)), artifacts.c.sha256.in_(list(shas)))
        )
        if ignore_stale_before:
            q = q.where(~_stale(ignore_stale_before))
        async with self.db.read() as conn:
            rows = (await conn.execute(q)).all()
        found = {r.storage_uri for r in rows} | {r.sha256 for r in rows}
        return found & (set(uris) | set(shas))

    # ---------------------------------------------------------------------- telemetry

    async def runs_keeping_telemetry(
        self, ended_before_us: int, *, after: EndedRun | None = None, limit: int = 100
    ) -> list[EndedRun]:
        """Runs that ended before `ended_before_us` whose telemetry was not dropped yet, by
        (end_us, id) after `after` (the last of the previous page): each page is a range of
        ix_runs_telemetry_kept from where the previous one ended."""
        q = select(runs.c.id, runs.c.end_us).where(
            runs.c.telemetry_dropped_us.is_(None), runs.c.end_us < ended_before_us
        )
        if after is not None:
            q = q.where(tuple_(runs.c.end_us, runs.c.id) > tuple_(after.end_us, after.id))
        q = q.order_by(runs.c.end_us, runs.c.id).limit(limit)
        async with self.db.read() as conn:
            return [EndedRun(r.id, r.end_us) for r in (await conn.execute(q)).all()]

    async def drop_telemetry(
        self, run_id: str, ended_before_us: int, *, dry_run: bool = False
    ) -> Dropped | None:
        """Drops the log, metric and progress events of a run that ended before
        `ended_before_us` from its history, keeping every other event with its sequence
        number, and records that it did (runs.telemetry_dropped_us). None when the run does
        not qualify (any more). A dry run only counts.

        A long history is rewritten in several transactions of SEGMENTS_PER_TRANSACTION
        segments each, so that none holds SQLite's write lock for long. Each replaces whole
        segments by what they keep (numbered as before, each without gaps, none overlapping):
        the history is valid after every one of them. The last one marks the run; a gc
        interrupted before leaves it unmarked, and the next one reads it again, finding no
        telemetry in the segments done."""
        if dry_run:
            async with self.db.read() as conn:
                dropped, _ = await _compact(conn, run_id, after=0, limit=None, apply=False)
            return dropped
        total: Dropped | None = None
        after: int | None = 0
        while after is not None:
            async with self.gc_write() as conn:
                locked = (
                    await conn.execute(
                        select(runs.c.id)
                        .where(
                            runs.c.id == run_id,
                            runs.c.end_us < ended_before_us,
                            runs.c.telemetry_dropped_us.is_(None),
                        )
                        .with_for_update()
                    )
                ).first()
                if locked is None:  # another gc marked it meanwhile
                    return total
                dropped, after = await _compact(
                    conn, run_id, after=after, limit=SEGMENTS_PER_TRANSACTION, apply=True
                )
                if after is None:
                    await conn.execute(
                        update(runs)
                        .where(runs.c.id == run_id)
                        .values(telemetry_dropped_us=now_us())
                    )
            total = dropped if total is None else total + dropped
        return total

    # ------------------------------------------------------------------------ uploads

    async def expired_uploads(
        self, expired_before_us: int, *, after: str = "", limit: int = 500
    ) -> list[ExpiredUpload]:
        q = (
            select(uploads.c.id, uploads.c.committed_size)
            .where(uploads.c.expire_us < expired_before_us, uploads.c.id > after)
            .order_by(uploads.c.id)
            .limit(limit)
        )
        async with self.db.read() as conn:
            return [ExpiredUpload(r.id, r.committed_size) for r in (await conn.execute(q)).all()]

    async def delete_upload(self, upload_id: str, expired_before_us: int) -> bool:
        async with self.gc_write() as conn:
            deleted = await conn.execute(
                delete(uploads).where(
                    uploads.c.id == upload_id, uploads.c.expire_us < expired_before_us
                )
            )
        return deleted.rowcount == 1

    async def uploads_present(self, upload_ids: Collection[str]) -> set[str]:
        if not upload_ids:
            return set()
        q = select(uploads.c.id).where(uploads.c.id.in_(list(upload_ids)))
        async with self.db.read() as conn:
            return set((await conn.execute(q)).scalars().all())


async def delete_stale_input(
    conn: AsyncConnection, artifact_id: str, cutoff_us: int
) -> StaleInput | None:
    """The DELETE of a stale input, its condition re-checked on the row it locks."""
    deleted = await conn.execute(
        delete(artifacts)
        .where(artifacts.c.id == artifact_id, _stale(cutoff_us))
        .returning(
            artifacts.c.id,
            artifacts.c.tenant,
            artifacts.c.storage_uri,
            artifacts.c.sha256,
            artifacts.c.size_bytes,
            artifacts.c.uploaded_us,
        )
    )
    row = deleted.first()
    return _stale_input(row) if row is not None else None


async def _compact(
    conn: AsyncConnection, run_id: str, *, after: int, limit: int | None, apply: bool
) -> tuple[Dropped, int | None]:
    """Rewrites (or, not `apply`ing, only measures) the segments of the run's history after
    sequence `after` that hold telemetry, reading up to `limit` segments (None: to the end) a
    page at a time. Returns what that dropped, and the last sequence it read when more
    segments may follow (None at the end of the history). The segments that replace one start
    at or after it and end at or before it: paging on from its last sequence never meets them."""
    events = size = read = 0
    while True:
        want = SEGMENTS_PER_READ if limit is None else min(SEGMENTS_PER_READ, limit - read)
        rows = (
            await conn.execute(
                select(
                    run_events.c.first_seq,
                    run_events.c.last_seq,
                    run_events.c.time_us,
                    run_events.c.payload,
                )
                .where(run_events.c.run_id == run_id, run_events.c.first_seq > after)
                .order_by(run_events.c.first_seq)
                .limit(want)
            )
        ).all()
        read += len(rows)
        for r in rows:
            kept = without_telemetry(r.first_seq, r.payload)
            if kept is None:
                continue
            events += r.last_seq - r.first_seq + 1 - sum(s.last - s.first + 1 for s in kept)
            size += len(r.payload) - sum(len(s.payload) for s in kept)
            if apply:
                await _replace_segment(conn, run_id, r.first_seq, r.time_us, kept)
        if len(rows) < want:
            return Dropped(events, size), None
        after = rows[-1].last_seq
        if limit is not None and read >= limit:
            return Dropped(events, size), after


async def _replace_segment(
    conn: AsyncConnection, run_id: str, first_seq: int, time_us: int, kept: list[Segment]
) -> None:
    await conn.execute(
        delete(run_events).where(run_events.c.run_id == run_id, run_events.c.first_seq == first_seq)
    )
    if kept:
        await conn.execute(
            insert(run_events),
            [
                {
                    "run_id": run_id,
                    "first_seq": s.first,
                    "last_seq": s.last,
                    "time_us": time_us,
                    "payload": s.payload,
                }
                for s in kept
            ],
        )
