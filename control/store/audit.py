"""The persisted audit log: every call the authorization interceptor guarded (who, what, when,
result; flnet.server.auth.audit.AuditRecord), written to `audit_events` and listed by tenant.

Recording never waits for the database: `record` (the interceptor's sink) appends to a bounded
in-memory buffer, and a background writer stores the buffer in batches, one transaction each.
When the buffer is full, records are dropped and counted (a warning per burst): a slow
database must not slow down or fail the calls being audited. `close` stops the writer and
stores what is left.

A record holds nothing but its own fields: the caller's identity, the method, the name of the
resource and the result; never a token, a request body or a configuration. Calls whose
credential was refused carry no trusted identity: their tenant is "" and no tenant lists them
through the API; they are kept for operators, who read them in the database.

The log is independent of the provenance Store but shares its engine and, on SQLite, its
write lock (control.database.write_lock); on PostgreSQL its batches are written alongside
the store's transactions.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from google.protobuf import duration_pb2
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from flnet.api.control.v1 import audit_pb2 as ap
from flnet.control.clock import timestamp
from flnet.control.database import write_lock
from flnet.control.schema import audit_events
from flnet.server.auth.audit import AuditRecord

log = logging.getLogger(__name__)

CAPACITY = 100_000
BATCH_SIZE = 1000
INTERVAL = 0.2
MAX_BACKOFF = 5.0
#: Longest text kept per field: method, resource and reason may come from any caller.
MAX_FIELD_CHARS = 1024

_TEXT_FIELDS = ("tenant", "subject", "client_id", "audience", "method", "resource", "reason")


@dataclass(frozen=True)
class AuditRow(AuditRecord):
    """A stored audit record; `id` is its sequence (larger: stored later)."""

    id: int

    def to_proto(self) -> ap.AuditEvent:
        duration = duration_pb2.Duration()
        duration.FromMicroseconds(self.duration_us)
        return ap.AuditEvent(
            sequence=self.id,
            time=timestamp(self.time_us),
            duration=duration,
            subject=self.subject,
            tenant=self.tenant,
            client_id=self.client_id,
            audience=self.audience,
            method=self.method,
            resource=self.resource,
            code=self.code,
            reason=self.reason,
        )


def _text(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """Storable text: bounded, valid UTF-8 and without NUL (which PostgreSQL refuses)."""
    text = str(value)[:limit]
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _values(rec: AuditRecord) -> dict[str, Any]:
    """The row of a record: its fields and nothing else."""
    values: dict[str, Any] = {field: _text(getattr(rec, field)) for field in _TEXT_FIELDS}
    values["code"] = _text(rec.code, 32)
    values["time_us"] = int(rec.time_us)
    values["duration_us"] = int(rec.duration_us)
    return values


class AuditLog:
    """Buffers audit records and stores them in the background.

    `record` is an `AuditSink`: call it on the event loop's thread (the interceptor does);
    `start` (or `run`) the writer inside the running loop, and `close` it at shutdown.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        capacity: int = CAPACITY,
        batch_size: int = BATCH_SIZE,
        interval: float = INTERVAL,
    ) -> None:
        self.engine = engine
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval
        self._write_lock = write_lock(engine)  # SQLite only
        self._buffer: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._burst = 0  # records dropped since the buffer last had room
        self.dropped = 0  # records dropped since start

    @property
    def pending(self) -> int:
        """Records buffered and not yet stored."""
        return len(self._buffer)

    def record(self, rec: AuditRecord) -> None:
        """Buffers one record for the writer; never blocks and never raises."""
        try:
            if self._closed or len(self._buffer) >= self.capacity:
                self._drop()
                return
            self._buffer.append(_values(rec))
            # Wake the writer when a batch is complete (only on crossing: while the database
            # is failing, the writer's back-off is not cut short by every new record).
            if len(self._buffer) == self.batch_size:
                self._wake.set()
        except Exception:
            log.exception("audit log: could not buffer a record")

    def _drop(self) -> None:
        self.dropped += 1
        self._burst += 1
        if self._burst == 1:
            if self._closed:
                log.warning("audit log is closed: dropping records")
            else:
                log.warning(
                    "audit log buffer is full (%d records): dropping records until the writer "
                    "catches up",
                    self.capacity,
                )

    def start(self) -> None:
        """Runs the writer as a task of the running loop (`close` stops it)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="flnet-audit-writer")

    async def run(self) -> None:
        """Stores the buffer every `interval` seconds, or as soon as a batch is complete,
        until `close`. A failed write keeps its records buffered and is retried with
        back-off."""
        failures = 0
        while not self._closed:
            if failures:
                delay = min(self.interval * 2**failures, MAX_BACKOFF)
            else:
                delay = self.interval if len(self._buffer) < self.batch_size else 0.0
            if delay:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            try:
                await self.flush()
            except Exception:
                failures += 1
                if failures == 1:
                    log.exception(
                        "audit log: storing records failed; %d stay buffered, retrying",
                        len(self._buffer),
                    )
            else:
                if failures:
                    log.info("audit log: storing records works again")
                failures = 0

    async def flush(self) -> None:
        """Stores every record buffered now, in batches of one transaction each, in order.
        If a batch fails, it goes back to the buffer and the error is raised."""
        async with self._flushing:
            remaining = len(self._buffer)
            while remaining > 0 and self._buffer:
                count = min(remaining, self.batch_size, len(self._buffer))
                batch = [self._buffer.popleft() for _ in range(count)]
                try:
                    await self._insert(batch)
                except BaseException:
                    self._buffer.extendleft(reversed(batch))
                    raise
                remaining -= count
                if self._burst:
                    log.warning("audit log dropped %d records (buffer was full)", self._burst)
                    self._burst = 0

    async def _insert(self, rows: builtins.list[dict[str, Any]]) -> None:
        # One statement with a list of parameter sets: the driver batches it.
        async with self._write_lock or contextlib.nullcontext(), self.engine.begin() as conn:
            await conn.execute(insert(audit_events), rows)

    async def close(self) -> None:
        """Stops the writer and stores what is buffered. Records that arrive afterwards are
        dropped; a failure to store is logged, not raised (this runs at shutdown)."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("audit log: %d records could not be stored at close", self.pending)

    async def list(
        self,
        tenant: str,
        *,
        subject: str = "",
        method: str = "",
        code: str = "",
        resource: str = "",
        time_from_us: int | None = None,
        time_to_us: int | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> builtins.list[AuditRow]:
        """A tenant's stored records, newest (largest id) first. Empty filters match all;
        the others match exactly. Times select the call's start: from inclusive, to
        exclusive. `before_id` is the id of the previous page's last record."""
        if any("\x00" in value for value in (tenant, subject, method, code, resource)):
            # Stored text holds no NUL (`_text`): nothing matches (and PostgreSQL would refuse
            # the query).
            return []
        c = audit_events.c
        q = select(audit_events).where(c.tenant == tenant)
        if subject:
            q = q.where(c.subject == subject)
        if method:
            q = q.where(c.method == method)
        if code:
            q = q.where(c.code == code)
        if resource:
            q = q.where(c.resource == resource)
        if time_from_us is not None:
            q = q.where(c.time_us >= time_from_us)
        if time_to_us is not None:
            q = q.where(c.time_us < time_to_us)
        if before_id is not None:
            q = q.where(c.id < before_id)
        q = q.order_by(c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [AuditRow(**r._mapping) for r in (await conn.execute(q)).all()]
