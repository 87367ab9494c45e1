"""Provenance store: every read and write of tools, runs, events and artifacts.

Each write is one transaction. A run's row is locked (FOR UPDATE on PostgreSQL; SQLite
writers are serialized by one lock) while its state or event sequence changes, so event
sequence numbers have no gaps and terminal states are never overwritten. After a commit
that adds events, the feed publishes them: watchers wake and read them from memory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control import names
from flnet.control.clock import now_us, timestamp
from flnet.control.news import RunFeed, Segment
from flnet.control.schema import artifacts, run_events, runs, tool_versions, tools, uploads
from flnet.errors import AlreadyExists, NotFound

S = lc.RunState
R = lc.ErrorReason
# Segments fetched per query while listing events: a few, since one holds up to a batch.
SEGMENTS_PER_READ = 4


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
        run.create_time.CopyFrom(timestamp(self.create_us))
        run.update_time.CopyFrom(timestamp(self.update_us))
        if self.start_us:
            run.start_time.CopyFrom(timestamp(self.start_us))
        if self.end_us:
            run.end_time.CopyFrom(timestamp(self.end_us))
        if self.deadline_us:
            run.deadline_time.CopyFrom(timestamp(self.deadline_us))
        run.outputs.extend(outputs)
        return run


def _run_row(r: Any) -> RunRow:
    return RunRow(
        id=r.id,
        tenant=r.tenant,
        state=r.state,
        spec=rp.Run.FromString(r.spec),
        error=lc.RunError.FromString(r.error) if r.error else None,
        cancellation=rp.Cancellation.FromString(r.cancellation) if r.cancellation else None,
        progress=tm.Progress.FromString(r.progress) if r.progress else None,
        last_sequence=r.last_sequence,
        last_batch=r.last_batch,
        create_us=r.create_us,
        update_us=r.update_us,
        start_us=r.start_us,
        end_us=r.end_us,
        deadline_us=r.deadline_us,
        credential_sha256=r.credential_sha256,
    )


def _artifact(r: Any) -> ap.Artifact:
    a = ap.Artifact(
        name=names.artifact_name(r.tenant, r.id),
        direction=r.direction,
        sha256=r.sha256,
        size_bytes=r.size_bytes,
        media_type=r.media_type,
        filename=r.filename,
        output_name=r.output_name or "",
        storage_uri=r.storage_uri,
    )
    if r.run_id:
        a.run = names.run_name(r.tenant, r.run_id)
    a.create_time.CopyFrom(timestamp(r.create_us))
    return a


Pending = list[tuple[str, Segment]]


class EventList(Protocol):
    """A message whose field 1 is `repeated RunEvent events`."""

    @property
    def events(self) -> RepeatedCompositeFieldContainer[rp.RunEvent]: ...

    def MergeFromString(self, serialized: bytes) -> int: ...


class _EventReader:
    """Merges stored segments into a response, keeping events after `after`, up to `limit`,
    and fills in what storage leaves out (run name, sequence number)."""

    def __init__(self, into: EventList, run: str, after: int, limit: int) -> None:
        self.into, self.run, self.after, self.limit = into, run, after, limit
        self.added = 0

    @property
    def full(self) -> bool:
        return self.added >= self.limit

    def take(self, first: int, payload: bytes) -> bool:
        """Adds a segment's events; True once `limit` events were added."""
        events = self.into.events
        start = len(events)
        self.into.MergeFromString(payload)
        skip = max(0, self.after - first + 1)
        if skip:
            del events[start : start + skip]
        extra = self.added + (len(events) - start) - self.limit
        if extra > 0:
            del events[len(events) - extra :]
        for offset, ev in enumerate(events[start:]):
            ev.sequence = first + skip + offset
            ev.run = self.run
        taken = len(events) - start
        self.added += taken
        self.after = first + skip + taken - 1 if taken else self.after
        return self.full


@dataclass
class BatchOutcome:
    """What storing one engine batch did."""

    acked: int  # highest contiguous batch sequence stored
    state: int  # the run's recorded state afterwards
    rejections: list[rt.Rejection] = field(default_factory=list)
    transitions: list[tuple[int, int]] = field(default_factory=list)  # (from, to) applied


@dataclass
class Upload:
    id: str
    tenant: str
    filename: str
    media_type: str
    total_size: int
    committed_size: int
    sha256: str
    finished: bool
    expire_us: int


class Store:
    def __init__(self, engine: AsyncEngine, feed: RunFeed) -> None:
        self.engine = engine
        self.feed = feed
        self._sqlite = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock()
        self._required_outputs: dict[str, frozenset[str]] = {}

    @contextlib.asynccontextmanager
    async def _write(self, pending: Pending | None = None) -> AsyncIterator[AsyncConnection]:
        """One write transaction; the history segments it appends to `pending` are published
        once it has committed. SQLite allows one writer at a time: serialize here rather than
        have transactions collide on SQLITE_BUSY (and publish in commit order)."""
        if self._sqlite:
            async with self._write_lock:
                async with self.engine.begin() as conn:
                    yield conn
                self._publish(pending)
        else:
            async with self.engine.begin() as conn:
                yield conn
            self._publish(pending)

    def _publish(self, pending: Pending | None) -> None:
        by_run: dict[str, list[Segment]] = {}
        for run_id, segment in pending or ():
            by_run.setdefault(run_id, []).append(segment)
        for run_id, segments in by_run.items():
            self.feed.publish(run_id, segments)

    # ----------------------------------------------------------------------------- tools

    async def put_tool_version(
        self, tenant: str, tool: str, version: tp.ToolVersion
    ) -> tuple[tp.ToolVersion, bool]:
        """Stores a version (creating its tool); an identical contract returns the existing one."""
        existing = await self._find_tool_version(tenant, tool, version.version)
        if existing is not None:
            if existing.contract_sha256 == version.contract_sha256:
                return existing, False
            raise AlreadyExists(
                f"{existing.name} exists with a different contract; versions are immutable, "
                "register a new version",
                violations=[("tool_version.version", "already used")],
            )
        now = now_us()
        version.create_time.CopyFrom(timestamp(now))
        try:
            async with self._write() as conn:
                row = (
                    await conn.execute(
                        select(tools.c.name).where(tools.c.tenant == tenant, tools.c.name == tool)
                    )
                ).first()
                if row is None:
                    await conn.execute(
                        insert(tools).values(
                            tenant=tenant,
                            name=tool,
                            kind=version.kind,
                            description=version.description,
                            create_us=now,
                            update_us=now,
                        )
                    )
                else:
                    await conn.execute(
                        update(tools)
                        .where(tools.c.tenant == tenant, tools.c.name == tool)
                        .values(kind=version.kind, description=version.description, update_us=now)
                    )
                await conn.execute(
                    insert(tool_versions).values(
                        tenant=tenant,
                        tool=tool,
                        version=version.version,
                        contract_sha256=version.contract_sha256,
                        spec=version.SerializeToString(),
                        create_us=now,
                    )
                )
        except IntegrityError:  # a concurrent registration of the same version won
            return await self.put_tool_version(tenant, tool, version)
        return version, True

    async def _find_tool_version(
        self, tenant: str, tool: str, version: str
    ) -> tp.ToolVersion | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(tool_versions.c.spec).where(
                        tool_versions.c.tenant == tenant,
                        tool_versions.c.tool == tool,
                        tool_versions.c.version == version,
                    )
                )
            ).first()
        return tp.ToolVersion.FromString(row.spec) if row else None

    async def get_tool_version(self, tenant: str, tool: str, version: str) -> tp.ToolVersion:
        found = await self._find_tool_version(tenant, tool, version)
        if found is None:
            raise NotFound(
                f"tool version tenants/{tenant}/tools/{tool}/versions/{version} does not exist"
            )
        return found

    async def get_tool(self, tenant: str, tool: str) -> tp.Tool:
        found = await self.list_tools(tenant, names_in=[tool])
        if not found:
            raise NotFound(f"tool {names.tool_name(tenant, tool)} does not exist")
        return found[0]

    async def list_tools(
        self,
        tenant: str,
        *,
        after: str = "",
        limit: int = 1000,
        names_in: Sequence[str] | None = None,
    ) -> list[tp.Tool]:
        q = select(tools).where(tools.c.tenant == tenant, tools.c.name > after)
        if names_in is not None:
            q = q.where(tools.c.name.in_(names_in))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(tools.c.name).limit(limit))).all()
            result = []
            for r in rows:
                versions = (
                    (
                        await conn.execute(
                            select(tool_versions.c.version)
                            .where(tool_versions.c.tenant == tenant, tool_versions.c.tool == r.name)
                            .order_by(tool_versions.c.id.desc())
                        )
                    )
                    .scalars()
                    .all()
                )
                t = tp.Tool(
                    name=names.tool_name(tenant, r.name),
                    kind=r.kind,
                    description=r.description,
                    versions=list(versions),
                )
                t.create_time.CopyFrom(timestamp(r.create_us))
                t.update_time.CopyFrom(timestamp(r.update_us))
                result.append(t)
        return result

    async def list_tool_versions(
        self, tenant: str, tool: str, *, before_id: int | None, limit: int
    ) -> list[tuple[int, tp.ToolVersion]]:
        q = select(tool_versions.c.id, tool_versions.c.spec).where(
            tool_versions.c.tenant == tenant, tool_versions.c.tool == tool
        )
        if before_id is not None:
            q = q.where(tool_versions.c.id < before_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(tool_versions.c.id.desc()).limit(limit))).all()
        return [(r.id, tp.ToolVersion.FromString(r.spec)) for r in rows]

    async def _required_outputs_of(
        self, conn: AsyncConnection, tool_version: str
    ) -> frozenset[str]:
        cached = self._required_outputs.get(tool_version)
        if cached is None:
            tv = names.parse_tool_version(tool_version)
            row = (
                await conn.execute(
                    select(tool_versions.c.spec).where(
                        tool_versions.c.tenant == tv.tenant,
                        tool_versions.c.tool == tv.tool,
                        tool_versions.c.version == tv.version,
                    )
                )
            ).one()
            spec = tp.ToolVersion.FromString(row.spec)
            cached = frozenset(o.name for o in spec.outputs if o.required)
            self._required_outputs[tool_version] = cached
        return cached

    # ------------------------------------------------------------------------------ runs

    async def create_run(
        self,
        *,
        run_id: str,
        tenant: str,
        tool: str,
        spec: rp.Run,
        request_sha256: str,
        credential_sha256: str,
        deadline_us: int | None,
    ) -> tuple[RunRow, bool]:
        """Inserts a PENDING run with its first state change. With a request_id already
        used in the tenant, returns that run instead (False)."""
        now = now_us()
        change = lc.StateChange(
            from_state=S.RUN_STATE_UNSPECIFIED,
            to_state=S.RUN_STATE_PENDING,
            time=timestamp(now),
            actor=spec.creator,
            message="run accepted",
        )
        event = rp.RunEvent(sequence=1, state_change=change)
        try:
            pending: Pending = []
            async with self._write(pending) as conn:
                await conn.execute(
                    insert(runs).values(
                        id=run_id,
                        tenant=tenant,
                        tool=tool,
                        tool_version=spec.tool_version,
                        state=S.RUN_STATE_PENDING,
                        spec=spec.SerializeToString(),
                        last_sequence=1,
                        last_batch=0,
                        request_id=spec.request_id or None,
                        request_sha256=request_sha256,
                        credential_sha256=credential_sha256,
                        dev_session_run=names.parse_run(spec.dev_session_run)[1]
                        if spec.dev_session_run
                        else None,
                        create_us=now,
                        update_us=now,
                        deadline_us=deadline_us,
                    )
                )
                await _append(conn, pending, run_id, now, [event])
        except IntegrityError:
            if spec.request_id:
                existing = await self.find_run_by_request(tenant, spec.request_id)
                if existing is not None:
                    return existing, False
            raise
        return await self.get_run(tenant, run_id), True

    async def find_run_by_request(self, tenant: str, request_id: str) -> RunRow | None:
        async with self.engine.connect() as conn:
            r = (
                await conn.execute(
                    select(runs).where(runs.c.tenant == tenant, runs.c.request_id == request_id)
                )
            ).first()
        return _run_row(r) if r else None

    async def request_sha256_of(self, run_id: str) -> str:
        async with self.engine.connect() as conn:
            return str(
                (
                    await conn.execute(select(runs.c.request_sha256).where(runs.c.id == run_id))
                ).scalar_one()
            )

    async def get_run(self, tenant: str, run_id: str) -> RunRow:
        async with self.engine.connect() as conn:
            r = (
                await conn.execute(select(runs).where(runs.c.tenant == tenant, runs.c.id == run_id))
            ).first()
        if r is None:
            raise NotFound(f"run {names.run_name(tenant, run_id)} does not exist")
        return _run_row(r)

    async def get_run_by_id(self, run_id: str) -> RunRow | None:
        async with self.engine.connect() as conn:
            r = (await conn.execute(select(runs).where(runs.c.id == run_id))).first()
        return _run_row(r) if r else None

    async def run_for_credential(self, credential_sha256: str) -> RunRow | None:
        async with self.engine.connect() as conn:
            r = (
                await conn.execute(
                    select(runs).where(runs.c.credential_sha256 == credential_sha256)
                )
            ).first()
        return _run_row(r) if r else None

    async def list_runs(
        self,
        tenant: str,
        *,
        tool: str = "",
        tool_version: str = "",
        states: Sequence[int] = (),
        created_from_us: int | None = None,
        created_to_us: int | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 50,
    ) -> list[RunRow]:
        """Newest first; `after` is the (create_us, id) of the previous page's last run."""
        q = select(runs).where(runs.c.tenant == tenant)
        if tool:
            q = q.where(runs.c.tool == tool)
        if tool_version:
            q = q.where(runs.c.tool_version == tool_version)
        if states:
            q = q.where(runs.c.state.in_(list(states)))
        if created_from_us is not None:
            q = q.where(runs.c.create_us >= created_from_us)
        if created_to_us is not None:
            q = q.where(runs.c.create_us < created_to_us)
        if after is not None:
            q = q.where(
                or_(
                    runs.c.create_us < after[0],
                    and_(runs.c.create_us == after[0], runs.c.id < after[1]),
                )
            )
        q = q.order_by(runs.c.create_us.desc(), runs.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [_run_row(r) for r in (await conn.execute(q)).all()]

    async def nonterminal_runs(self) -> list[RunRow]:
        q = select(runs).where(
            runs.c.state.in_(
                [
                    S.RUN_STATE_PENDING,
                    S.RUN_STATE_INITIALIZED,
                    S.RUN_STATE_STARTED,
                    S.RUN_STATE_RUNNING,
                ]
            )
        )
        async with self.engine.connect() as conn:
            return [_run_row(r) for r in (await conn.execute(q)).all()]

    async def _lock_run(self, conn: AsyncConnection, run_id: str) -> Any:
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

    async def apply_batches(self, run_id: str, batches: Sequence[rt.Batch]) -> BatchOutcome:
        """Stores engine batches exactly once (see RuntimeService.Connect), all in one
        transaction: batches that queued up while the previous commit ran share the next
        one. A duplicate (already stored) or a gap (the engine resends in order) is only
        acknowledged."""
        pending: Pending = []
        async with self._write(pending) as conn:
            row = await self._lock_run(conn, run_id)
            now = now_us()
            outcome = BatchOutcome(acked=row.last_batch, state=row.state)
            seq = row.last_sequence
            values: dict[str, Any] = {}
            for batch in batches:
                if batch.sequence != outcome.acked + 1:
                    continue
                seq = await self._apply(conn, pending, row, batch, seq, now, outcome, values)
                outcome.acked = batch.sequence
            if outcome.acked != row.last_batch:
                await conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id)
                    .values(last_batch=outcome.acked, last_sequence=seq, update_us=now, **values)
                )
        return outcome

    async def _apply(
        self,
        conn: AsyncConnection,
        pending: Pending,
        row: Any,
        batch: rt.Batch,
        seq: int,
        now: int,
        outcome: BatchOutcome,
        values: dict[str, Any],
    ) -> int:
        """Appends one batch's events after `seq`; returns the new last sequence. Updates
        `outcome` (state, transitions, rejections) and the run's column `values`."""
        kinds = [entry.WhichOneof("entry") for entry in batch.entries]
        if "progress" in kinds:
            last = len(kinds) - 1 - kinds[::-1].index("progress")
            values["progress"] = batch.entries[last].progress.SerializeToString()
        if "transition" not in kinds:
            # Telemetry only: the batch's bytes are the segment (see Entry's field numbers).
            count = len(kinds) - kinds.count(None)
            if count:
                segment = rp.RunEventSegment.FromString(batch.SerializeToString())
                segment.DiscardUnknownFields()  # Batch.sequence
                await _append_segment(conn, pending, row.id, now, seq + 1, seq + count, segment)
            return seq + count
        events: list[rp.RunEvent] = []
        for index, entry in enumerate(batch.entries):
            which = entry.WhichOneof("entry")
            if which == "log":
                ev = rp.RunEvent(log=entry.log)
            elif which == "metric":
                ev = rp.RunEvent(metric=entry.metric)
            elif which == "progress":
                ev = rp.RunEvent(progress=entry.progress)
            elif which == "transition":
                t = entry.transition
                refusal = _refusal(outcome.state, t)
                if refusal:
                    outcome.rejections.append(
                        rt.Rejection(sequence=batch.sequence, index=index, reason=refusal)
                    )
                    continue
                to_state, error, message = await self._finalize(conn, row, t)
                change, changes = _state_change(
                    outcome.state, to_state, error, message, "engine", now, row.cancellation
                )
                values.update(changes)
                outcome.transitions.append((outcome.state, to_state))
                outcome.state = to_state
                ev = rp.RunEvent(state_change=change)
            else:
                continue
            seq += 1
            ev.sequence = seq
            events.append(ev)
        if events:
            await _append(conn, pending, row.id, now, events)
        return seq

    async def _finalize(
        self, conn: AsyncConnection, row: Any, t: rt.Transition
    ) -> tuple[int, lc.RunError | None, str]:
        """A proposed FINISHED becomes ERROR(OUTPUT_MISSING) while a required output is
        missing; an ERROR without a cause gets one."""
        if t.to_state == S.RUN_STATE_FINISHED:
            required = await self._required_outputs_of(conn, row.tool_version)
            present = set(
                (
                    await conn.execute(
                        select(artifacts.c.output_name).where(artifacts.c.run_id == row.id)
                    )
                )
                .scalars()
                .all()
            )
            missing = sorted(required - present)
            if missing:
                return (
                    S.RUN_STATE_ERROR,
                    lifecycle.make_error(
                        R.ERROR_REASON_OUTPUT_MISSING,
                        f"required outputs not uploaded: {', '.join(missing)}",
                        phase=S.RUN_STATE_RUNNING,
                    ),
                    t.message,
                )
        if t.to_state == S.RUN_STATE_ERROR:
            error = (
                t.error
                if t.HasField("error") and t.error.reason
                else lifecycle.make_error(
                    R.ERROR_REASON_INTERNAL,
                    t.error.message or t.message or "engine reported an error",
                )
            )
            return S.RUN_STATE_ERROR, error, t.message
        return t.to_state, None, t.message

    async def transition(
        self,
        run_id: str,
        to_state: int,
        *,
        actor: str,
        message: str = "",
        error: lc.RunError | None = None,
    ) -> tuple[bool, int]:
        """A transition decided by the control plane (cancel, timeout, container exit).
        Returns (applied, state); a terminal run is left as it is."""
        pending: Pending = []
        async with self._write(pending) as conn:
            row = await self._lock_run(conn, run_id)
            if not lifecycle.is_legal(row.state, to_state):
                return False, row.state
            now = now_us()
            seq = row.last_sequence + 1
            change, values = _state_change(
                row.state, to_state, error, message, actor, now, row.cancellation
            )
            ev = rp.RunEvent(sequence=seq, state_change=change)
            await _append(conn, pending, run_id, now, [ev])
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(last_sequence=seq, update_us=now, **values)
            )
        return True, to_state

    async def request_cancel(self, run_id: str, requested_by: str, reason: str) -> RunRow:
        """Phase one of a cancel: records who asked, why and when (once)."""
        pending: Pending = []
        async with self._write(pending) as conn:
            row = await self._lock_run(conn, run_id)
            if not lifecycle.is_terminal(row.state) and row.cancellation is None:
                now = now_us()
                c = rp.Cancellation(
                    requested_by=requested_by, reason=reason, request_time=timestamp(now)
                )
                seq = row.last_sequence + 1
                ev = rp.RunEvent(sequence=seq, cancellation=c)
                await _append(conn, pending, run_id, now, [ev])
                await conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id)
                    .values(last_sequence=seq, update_us=now, cancellation=c.SerializeToString())
                )
        found = await self.get_run_by_id(run_id)
        assert found is not None
        return found

    async def update_dev_config(self, run_id: str, config: rp.ConfigChange) -> None:
        """Replaces a development session's configuration and records the change."""
        pending: Pending = []
        async with self._write(pending) as conn:
            row = await self._lock_run(conn, run_id)
            spec_row = (await conn.execute(select(runs.c.spec).where(runs.c.id == run_id))).one()
            spec = rp.Run.FromString(spec_row.spec)
            spec.config.CopyFrom(config.config)
            spec.config_sha256 = config.config_sha256
            now = now_us()
            seq = row.last_sequence + 1
            ev = rp.RunEvent(sequence=seq, config_change=config)
            await _append(conn, pending, run_id, now, [ev])
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(spec=spec.SerializeToString(), last_sequence=seq, update_us=now)
            )

    async def read_events(self, run: RunRow, into: EventList, *, after: int, limit: int) -> int:
        """Appends up to `limit` events with a sequence above `after`, in order, to
        `into.events` and returns how many. `into` is any message whose field 1 is
        `repeated RunEvent events` (WatchRunResponse, ListRunEventsResponse): segments merge
        into it as bytes, without copying event by event. Recent segments come from memory."""
        reader = _EventReader(into, run.name, after, limit)
        recent = self.feed.recent(run.id, after)
        if recent is not None:
            for segment in recent:
                if reader.take(segment.first, segment.payload):
                    break
            return reader.added
        async with self.engine.connect() as conn:
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
                    if reader.take(r.first_seq, r.payload):
                        break
                if len(rows) < SEGMENTS_PER_READ:
                    break
        return reader.added

    # ------------------------------------------------------------------------- artifacts

    async def add_input_artifact(
        self,
        *,
        artifact_id: str,
        tenant: str,
        sha256: str,
        size: int,
        media_type: str,
        filename: str,
        uri: str,
    ) -> ap.Artifact:
        """Records an uploaded input; identical content in a tenant is one artifact."""
        async with self._write() as conn:
            existing = (
                await conn.execute(
                    select(artifacts).where(
                        artifacts.c.tenant == tenant,
                        artifacts.c.sha256 == sha256,
                        artifacts.c.direction == ap.ARTIFACT_DIRECTION_INPUT,
                    )
                )
            ).first()
            if existing is not None:
                return _artifact(existing)
            values = dict(
                id=artifact_id,
                tenant=tenant,
                direction=ap.ARTIFACT_DIRECTION_INPUT,
                sha256=sha256,
                size_bytes=size,
                media_type=media_type,
                filename=filename,
                storage_uri=uri,
                create_us=now_us(),
            )
            await conn.execute(insert(artifacts).values(**values))
        return _artifact(_Obj(values | {"run_id": None, "output_name": None}))

    async def add_output_artifact(
        self,
        *,
        artifact_id: str,
        run: RunRow,
        output_name: str,
        sha256: str,
        size: int,
        media_type: str,
        uri: str,
    ) -> ap.Artifact:
        """Records a verified output and its event. Uploading the same output again (an
        engine retrying after a reconnect) replaces it."""
        pending: Pending = []
        async with self._write(pending) as conn:
            row = await self._lock_run(conn, run.id)
            now = now_us()
            existing = (
                await conn.execute(
                    select(artifacts).where(
                        artifacts.c.run_id == run.id, artifacts.c.output_name == output_name
                    )
                )
            ).first()
            if existing is not None and existing.sha256 == sha256:
                return _artifact(existing)
            if existing is not None:
                await conn.execute(artifacts.delete().where(artifacts.c.id == existing.id))
            values = dict(
                id=artifact_id,
                tenant=run.tenant,
                direction=ap.ARTIFACT_DIRECTION_OUTPUT,
                sha256=sha256,
                size_bytes=size,
                media_type=media_type,
                filename=output_name,
                run_id=run.id,
                output_name=output_name,
                storage_uri=uri,
                create_us=now,
            )
            await conn.execute(insert(artifacts).values(**values))
            artifact = _artifact(_Obj(values))
            seq = row.last_sequence + 1
            ev = rp.RunEvent(sequence=seq, output=artifact)
            await _append(conn, pending, run.id, now, [ev])
            await conn.execute(
                update(runs).where(runs.c.id == run.id).values(last_sequence=seq, update_us=now)
            )
        return artifact

    async def get_artifact(self, tenant: str, artifact_id: str) -> ap.Artifact:
        async with self.engine.connect() as conn:
            r = (
                await conn.execute(
                    select(artifacts).where(
                        artifacts.c.tenant == tenant, artifacts.c.id == artifact_id
                    )
                )
            ).first()
        if r is None:
            raise NotFound(f"artifact {names.artifact_name(tenant, artifact_id)} does not exist")
        return _artifact(r)

    async def run_outputs(self, run_ids: Sequence[str]) -> dict[str, list[ap.Artifact]]:
        if not run_ids:
            return {}
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(artifacts)
                    .where(artifacts.c.run_id.in_(list(run_ids)))
                    .order_by(artifacts.c.output_name)
                )
            ).all()
        out: dict[str, list[ap.Artifact]] = {rid: [] for rid in run_ids}
        for r in rows:
            out[r.run_id].append(_artifact(r))
        return out

    async def list_artifacts(
        self, tenant: str, *, run_id: str | None, after: tuple[int, str] | None, limit: int
    ) -> list[ap.Artifact]:
        q = select(artifacts).where(artifacts.c.tenant == tenant)
        if run_id is not None:
            q = q.where(artifacts.c.run_id == run_id)
        if after is not None:
            q = q.where(
                or_(
                    artifacts.c.create_us < after[0],
                    and_(artifacts.c.create_us == after[0], artifacts.c.id < after[1]),
                )
            )
        q = q.order_by(artifacts.c.create_us.desc(), artifacts.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [_artifact(r) for r in (await conn.execute(q)).all()]

    # --------------------------------------------------------------------------- uploads

    async def create_upload(self, upload: Upload) -> None:
        async with self._write() as conn:
            await conn.execute(
                insert(uploads).values(
                    id=upload.id,
                    tenant=upload.tenant,
                    filename=upload.filename,
                    media_type=upload.media_type,
                    total_size=upload.total_size,
                    committed_size=0,
                    sha256=upload.sha256,
                    finished=False,
                    create_us=now_us(),
                    expire_us=upload.expire_us,
                )
            )

    async def get_upload(self, tenant: str, upload_id: str) -> Upload:
        async with self.engine.connect() as conn:
            r = (
                await conn.execute(
                    select(uploads).where(uploads.c.tenant == tenant, uploads.c.id == upload_id)
                )
            ).first()
        if r is None or r.expire_us < now_us():
            raise NotFound(
                f"upload {names.upload_name(tenant, upload_id)} does not exist or expired"
            )
        return Upload(
            id=r.id,
            tenant=r.tenant,
            filename=r.filename,
            media_type=r.media_type,
            total_size=r.total_size,
            committed_size=r.committed_size,
            sha256=r.sha256,
            finished=r.finished,
            expire_us=r.expire_us,
        )

    async def set_upload_progress(
        self, upload_id: str, committed: int, finished: bool = False
    ) -> None:
        async with self._write() as conn:
            await conn.execute(
                update(uploads)
                .where(uploads.c.id == upload_id)
                .values(committed_size=committed, finished=finished)
            )

    async def count_events(self, run_id: str) -> int:
        async with self.engine.connect() as conn:
            total = (
                await conn.execute(
                    select(func.sum(run_events.c.last_seq - run_events.c.first_seq + 1)).where(
                        run_events.c.run_id == run_id
                    )
                )
            ).scalar_one()
        return int(total or 0)


class _Obj:
    """Attribute access over a dict, so freshly inserted rows convert like fetched ones."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _state_change(
    from_state: int,
    to_state: int,
    error: lc.RunError | None,
    message: str,
    actor: str,
    now: int,
    cancellation_blob: bytes | None,
) -> tuple[lc.StateChange, dict[str, Any]]:
    """The event and the column updates of one legal transition."""
    change = lc.StateChange(
        from_state=S.ValueType(from_state),
        to_state=S.ValueType(to_state),
        time=timestamp(now),
        message=message,
        actor=actor,
    )
    values: dict[str, Any] = {"state": to_state}
    if error is not None:
        if not error.phase:
            error.phase = S.ValueType(from_state)
        change.error.CopyFrom(error)
        values["error"] = error.SerializeToString()
    if to_state == S.RUN_STATE_RUNNING:
        values["start_us"] = now
    if lifecycle.is_terminal(to_state):
        values["end_us"] = now
        if cancellation_blob:
            c = rp.Cancellation.FromString(cancellation_blob)
            c.complete_time.CopyFrom(timestamp(now))
            c.teardown.FromMicroseconds(now - c.request_time.ToMicroseconds())
            values["cancellation"] = c.SerializeToString()
    return change, values


def _refusal(state: int, t: rt.Transition) -> str:
    if lifecycle.is_terminal(state):
        return f"run is already {lifecycle.state_name(state)}"
    if not lifecycle.is_legal(state, t.to_state):
        return (
            f"illegal transition {lifecycle.state_name(state)} -> "
            f"{lifecycle.state_name(t.to_state)}"
        )
    return ""


async def _append(
    conn: AsyncConnection, pending: Pending, run_id: str, now: int, events: list[rp.RunEvent]
) -> None:
    """Stores consecutive events as one segment of the run's history."""
    segment = rp.RunEventSegment(events=events)
    await _append_segment(
        conn, pending, run_id, now, events[0].sequence, events[-1].sequence, segment
    )


async def _append_segment(
    conn: AsyncConnection,
    pending: Pending,
    run_id: str,
    now: int,
    first_seq: int,
    last_seq: int,
    segment: rp.RunEventSegment,
) -> None:
    """A run's history is a sequence of segments, one per transaction: a batch of 1000 log
    lines costs one row. Events are stored without `run` and `sequence`; a segment's events
    are numbered first_seq, first_seq + 1, ... (read_events fills both in)."""
    payload = segment.SerializeToString()
    await conn.execute(
        insert(run_events).values(
            run_id=run_id, first_seq=first_seq, last_seq=last_seq, time_us=now, payload=payload
        )
    )
    pending.append((run_id, Segment(first_seq, last_seq, payload)))
