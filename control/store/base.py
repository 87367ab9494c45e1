"""The store's foundation: the run row, write transactions (serialized on SQLite), run-row
locks, the history a transaction appends (stored in one statement, published to the feed once
committed), and the checks that make text storable alike on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import Column, ColumnElement, String, and_, insert, or_, select
from sqlalchemy.engine import Engine, Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.control import names
from flnet.control.clock import set_timestamp
from flnet.control.database import loop_reader, write_lock
from flnet.control.news import RunFeed, Segment
from flnet.control.notifications import notify
from flnet.control.schema import run_events, runs
from flnet.errors import InvalidArgument

S = lc.RunState


@dataclass
class Pending:
    """The history segments a write transaction appends: their rows are inserted together,
    one statement with a list of parameter sets (the driver batches it: one round trip however
    many engine batches the transaction stores), just before it commits; the segments are
    published to the feed right after."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    segments: list[tuple[str, Segment]] = field(default_factory=list)

    def add(self, run_id: str, now: int, segment: Segment) -> None:
        self.rows.append(
            {
                "run_id": run_id,
                "first_seq": segment.first,
                "last_seq": segment.last,
                "time_us": now,
                "payload": segment.payload,
            }
        )
        self.segments.append((run_id, segment))


def older_than(
    time: Column[int], id_: Column[str], position: tuple[Any, Any]
) -> ColumnElement[bool]:
    """The rows after `position` (the previous page's last `(time, id)`) in a newest-first
    listing ordered by (time, id) descending (values or bind parameters). The bound on `time`
    alone is what an index on (..., time, id) seeks to; the rest only sorts out the ties at
    `position`'s time."""
    at, last_id = position
    return and_(time <= at, or_(time < at, id_ < last_id))


def storable(value: str, column: Column[Any], path: str) -> str:
    """`value` when SQLite and PostgreSQL store it alike in `column`, else InvalidArgument
    naming the request field at `path`. PostgreSQL refuses NUL in text and more characters
    than a VARCHAR(n) holds, where SQLite would store both: such a value is refused on either."""
    limit = column.type.length if isinstance(column.type, String) else None
    if limit is not None and len(value) > limit:
        raise InvalidArgument(
            f"{path} is longer than {limit} characters",
            violations=[(path, f"at most {limit} characters")],
        )
    if "\x00" in value:
        raise InvalidArgument(
            f"{path} contains a NUL character", violations=[(path, "must not contain NUL")]
        )
    return value


@dataclass
class RunRow:
    """A run as stored: the immutable spec plus the columns that change."""

    id: str
    tenant: str
    state: int
    spec: rp.Run
    error: lc.RunError | None
    cancellation: rp.Cancellation | None
    progress: tm.Progress | None
    last_sequence: int
    last_batch: int
    create_us: int
    update_us: int
    start_us: int | None
    end_us: int | None
    deadline_us: int | None
    credential_sha256: str
    engine_seen_us: int | None = None
    telemetry_dropped_us: int | None = None
    # Placement (control.fleet): queued since, why it waits, where it was placed and when,
    # when its orchestrator launched it.
    queued_us: int | None = None
    queue_reason: str | None = None
    orchestrator: str | None = None
    assigned_us: int | None = None
    launched_us: int | None = None

    @property
    def name(self) -> str:
        return names.run_name(self.tenant, self.id)

    @property
    def terminal(self) -> bool:
        return lifecycle.is_terminal(self.state)

    def to_proto(self, outputs: Sequence[ap.Artifact] = ()) -> rp.Run:
        run = rp.Run()
        run.CopyFrom(self.spec)
        run.name = self.name
        run.state = S.ValueType(self.state)
        if self.error is not None:
            run.error.CopyFrom(self.error)
        if self.cancellation is not None:
            run.cancellation.CopyFrom(self.cancellation)
        if self.progress is not None:
            run.progress.CopyFrom(self.progress)
        run.last_sequence = self.last_sequence
        set_timestamp(run.create_time, self.create_us)
        set_timestamp(run.update_time, self.update_us)
        if self.start_us:
            set_timestamp(run.start_time, self.start_us)
        if self.end_us:
            set_timestamp(run.end_time, self.end_us)
        if self.deadline_us:
            set_timestamp(run.deadline_time, self.deadline_us)
        if self.telemetry_dropped_us:
            set_timestamp(run.telemetry_drop_time, self.telemetry_dropped_us)
        if self.orchestrator:
            run.orchestrator = f"orchestrators/{self.orchestrator}"
        if self.queued_us is not None:
            run.queue.reason = self.queue_reason or "waiting to be placed"
        run.outputs.extend(outputs)
        return run


# What a RunRow holds, and so what reads of runs select (a listing reads 50 rows: a column
# fetched and dropped costs as much as one kept).
RUN_ROW_COLUMNS = tuple(runs.c[f.name] for f in fields(RunRow))


def run_rows(result: Result[Any]) -> list[RunRow]:
    """The fetched rows of `runs` as RunRows."""
    # By key from a dict: a Row's lookup by name costs ten times more, and a page of runs
    # converts 50 rows of 30 columns.
    keys = tuple(result.keys())
    return [_run_row(dict(zip(keys, r, strict=True))) for r in result]


def run_row(r: Any) -> RunRow:
    """A fetched row of `runs` (or an Obj of one being inserted) as a RunRow."""
    return _run_row(r.__dict__ if isinstance(r, Obj) else r._asdict())


def _run_row(v: dict[str, Any]) -> RunRow:
    return RunRow(
        id=v["id"],
        tenant=v["tenant"],
        state=v["state"],
        spec=rp.Run.FromString(v["spec"]),
        error=lc.RunError.FromString(v["error"]) if v["error"] else None,
        cancellation=rp.Cancellation.FromString(v["cancellation"]) if v["cancellation"] else None,
        progress=tm.Progress.FromString(v["progress"]) if v["progress"] else None,
        last_sequence=v["last_sequence"],
        last_batch=v["last_batch"],
        create_us=v["create_us"],
        update_us=v["update_us"],
        start_us=v["start_us"],
        end_us=v["end_us"],
        deadline_us=v["deadline_us"],
        credential_sha256=v["credential_sha256"],
        engine_seen_us=v["engine_seen_us"],
        telemetry_dropped_us=v["telemetry_dropped_us"],
        queued_us=v["queued_us"],
        queue_reason=v["queue_reason"],
        orchestrator=v["orchestrator"],
        assigned_us=v["assigned_us"],
        launched_us=v["launched_us"],
    )


class Obj:
    """Attribute access over a dict, so freshly inserted rows convert like fetched ones."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


class _LoopRead:
    """A read connection of a loop reader, with AsyncConnection's `execute` (its results are
    fetched whole at once: control.database.loop_reader)."""

    def __init__(self, reader: Engine) -> None:
        self._reader = reader

    async def __aenter__(self) -> _LoopRead:
        self._conn = self._reader.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._conn.close()

    async def execute(self, statement: Any, parameters: Any = None) -> Result[Any]:
        return self._conn.execute(statement, parameters)


class Database:
    """The connection the store's parts share: reads, write transactions, run-row locks."""

    def __init__(self, engine: AsyncEngine, feed: RunFeed) -> None:
        self.engine = engine
        self.feed = feed
        # SQLite only (control.database.write_lock); PostgreSQL locks rows instead.
        self._write_lock = write_lock(engine)
        self._reader = loop_reader(engine)

    def read(self) -> Any:
        """A connection for reads (an async context manager): on a SQLite file, one used on
        the loop's thread (control.database.loop_reader)."""
        if self._reader is not None:
            return _LoopRead(self._reader)
        return self.engine.connect()

    @contextlib.asynccontextmanager
    async def write(self, pending: Pending | None = None) -> AsyncIterator[AsyncConnection]:
        """One write transaction. The history segments it appends to `pending` are inserted
        just before it commits and published right after, before anything else awaits: the
        transactions of one run follow each other (its row is locked, or on SQLite every
        writer holds the write lock), and so do their publications. SQLite allows one writer
        at a time: serialize here rather than have transactions collide on SQLITE_BUSY."""
        lock = self._write_lock or contextlib.nullcontext()
        async with lock, self.engine.connect() as conn:
            async with conn.begin():
                yield conn
                if pending is not None and pending.rows:
                    await conn.execute(insert(run_events), pending.rows)
                    if conn.dialect.name == "postgresql":  # other replicas' watchers
                        await notify(conn, self.feed.origin, (r for r, _ in pending.segments))
            self._publish(pending)

    def _publish(self, pending: Pending | None) -> None:
        by_run: dict[str, list[Segment]] = {}
        for run_id, segment in pending.segments if pending is not None else ():
            by_run.setdefault(run_id, []).append(segment)
        for run_id, segments in by_run.items():
            self.feed.publish(run_id, segments)

    async def lock_run(self, conn: AsyncConnection, run_id: str) -> Any:
        """The run's row, locked until the transaction ends."""
        return (
            await conn.execute(
                select(
                    runs.c.id,
                    runs.c.tenant,
                    runs.c.state,
                    runs.c.tool_version,
                    runs.c.last_sequence,
                    runs.c.last_batch,
                    runs.c.cancellation,
                )
                .where(runs.c.id == run_id)
                .with_for_update()
            )
        ).one()
