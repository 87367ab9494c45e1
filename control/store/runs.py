"""Runs: creation, lookups, engine batches, transitions, cancellation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control import names, verdicts
from flnet.control.clock import now_us, timestamp
from flnet.control.engine_batches import EngineBatch
from flnet.control.news import Segment
from flnet.control.schema import artifacts, run_inputs, runs
from flnet.control.store.base import (
    RUN_ROW_COLUMNS,
    Database,
    Pending,
    RunRow,
    older_than,
    run_row,
    run_rows,
    storable,
)
from flnet.control.store.history import append_events
from flnet.control.store.tools import ToolStore
from flnet.errors import NotFound

S = lc.RunState
SHA256 = re.compile(r"[0-9a-f]{64}")


# The reads of every call, built once: building a statement costs more than running it.
_RUN = select(*RUN_ROW_COLUMNS).where(runs.c.id == bindparam("id"))
_RUN_OF_TENANT = _RUN.where(runs.c.tenant == bindparam("tenant"))
# A listing's statement per combination of filters (RunStore.list_runs).
_LISTINGS: dict[tuple[bool, ...], Select[Any]] = {}


def _listing(
    tool: bool, tool_version: bool, states: bool, since: bool, until: bool, after: bool
) -> Select[Any]:
    """Newest first, the filters given bound by name (see list_runs' parameters)."""
    q = select(*RUN_ROW_COLUMNS).where(runs.c.tenant == bindparam("tenant"))
    if tool:
        q = q.where(runs.c.tool == bindparam("tool"))
    if tool_version:
        q = q.where(runs.c.tool_version == bindparam("tool_version"))
    if states:
        q = q.where(runs.c.state.in_(bindparam("states", expanding=True)))
    if since:
        q = q.where(runs.c.create_us >= bindparam("from"))
    if until:
        q = q.where(runs.c.create_us < bindparam("to"))
    if after:
        q = q.where(
            older_than(runs.c.create_us, runs.c.id, (bindparam("at"), bindparam("last_id")))
        )
    return q.order_by(runs.c.create_us.desc(), runs.c.id.desc()).limit(bindparam("limit"))


@dataclass
class BatchOutcome:
    """What storing one engine batch did."""

    acked: int  # highest contiguous batch sequence stored
    state: int  # the run's recorded state afterwards
    rejections: list[rt.Rejection] = field(default_factory=list)
    transitions: list[tuple[int, int]] = field(default_factory=list)  # (from, to) applied


@dataclass(frozen=True)
class RunFilter:
    """Which runs of a tenant a listing shows (every field optional)."""

    tool: str = ""
    tool_version: str = ""
    states: Sequence[int] = ()
    created_from_us: int | None = None  # inclusive
    created_to_us: int | None = None  # exclusive


class RunStore:
    def __init__(self, db: Database, tools: ToolStore) -> None:
        self.db = db
        self.tools = tools

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
        queued: bool = False,
        reserves: tuple[int, int] = (0, 0),
        required_labels: Sequence[str] = (),
    ) -> tuple[RunRow, bool]:
        """Inserts a PENDING run with its first state change, `queued` to be placed on an
        orchestrator where it `reserves` (CPU millicores, memory bytes) and finds its
        `required_labels`. With a request_id already used in the tenant, returns that run
        instead (False)."""
        storable(spec.request_id, runs.c.request_id, "request_id")
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
            pending = Pending()
            async with self.db.write(pending) as conn:
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
                        queued_us=now if queued else None,
                        cpu_millis=reserves[0],
                        memory_bytes=reserves[1],
                        required_labels=" ".join(required_labels),
                    )
                )
                await _bind_inputs(conn, run_id, spec)
                append_events(pending, run_id, now, [event])
        except IntegrityError:
            if spec.request_id:
                existing = await self.find_run_by_request(tenant, spec.request_id)
                if existing is not None:
                    return existing, False
            if missing := await self._missing_input(spec):
                # gc deleted it after the inputs were resolved: its foreign key said no.
                raise NotFound(f"artifact {missing} does not exist") from None
            raise
        return await self.get_run(tenant, run_id), True

    async def _missing_input(self, spec: rp.Run) -> str:
        """The first input of `spec` whose artifact does not exist ("": none)."""
        bound = {_artifact_id(i.artifact): i.artifact for i in spec.inputs}
        async with self.db.read() as conn:
            found = set(
                (await conn.execute(select(artifacts.c.id).where(artifacts.c.id.in_(bound))))
                .scalars()
                .all()
            )
        return next((name for id_, name in bound.items() if id_ not in found), "")

    async def find_run_by_request(self, tenant: str, request_id: str) -> RunRow | None:
        storable(request_id, runs.c.request_id, "request_id")
        async with self.db.read() as conn:
            r = (
                await conn.execute(
                    select(runs).where(runs.c.tenant == tenant, runs.c.request_id == request_id)
                )
            ).first()
        return run_row(r) if r else None

    async def request_sha256_of(self, run_id: str) -> str:
        async with self.db.read() as conn:
            return str(
                (
                    await conn.execute(select(runs.c.request_sha256).where(runs.c.id == run_id))
                ).scalar_one()
            )

    async def get_run(self, tenant: str, run_id: str) -> RunRow:
        async with self.db.read() as conn:
            r = (await conn.execute(_RUN_OF_TENANT, {"tenant": tenant, "id": run_id})).first()
        if r is None:
            raise NotFound(f"run {names.run_name(tenant, run_id)} does not exist")
        return run_row(r)

    async def get_run_by_id(self, run_id: str) -> RunRow | None:
        async with self.db.read() as conn:
            r = (await conn.execute(_RUN, {"id": run_id})).first()
        return run_row(r) if r else None

    async def list_runs(
        self,
        tenant: str,
        where: RunFilter = RunFilter(),
        *,
        after: tuple[int, str] | None = None,
        limit: int = 50,
    ) -> list[RunRow]:
        """Newest first; `after` is the (create_us, id) of the previous page's last run.
        Indexes by tenant, by tenant and tool, tool version or state hold the runs in this
        order (migration 0003)."""
        shape = (
            bool(where.tool),
            bool(where.tool_version),
            bool(where.states),
            where.created_from_us is not None,
            where.created_to_us is not None,
            after is not None,
        )
        q = _LISTINGS.get(shape)
        if q is None:
            q = _LISTINGS[shape] = _listing(*shape)
        at, last_id = after or (0, "")
        params = {
            "tenant": tenant,
            "tool": where.tool,
            "tool_version": where.tool_version,
            "states": list(where.states),
            "from": where.created_from_us,
            "to": where.created_to_us,
            "at": at,
            "last_id": last_id,
            "limit": limit,
        }
        async with self.db.read() as conn:
            return run_rows(await conn.execute(q, params))

    async def mark_engines_seen(self, run_ids: list[str], when_us: int) -> None:
        """Records that the engines of `run_ids` were heard at `when_us` (never backwards)."""
        if not run_ids:
            return
        async with self.db.write() as conn:
            await conn.execute(
                update(runs)
                .where(
                    runs.c.id.in_(run_ids),
                    or_(runs.c.engine_seen_us.is_(None), runs.c.engine_seen_us < when_us),
                )
                .values(engine_seen_us=when_us)
            )

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
        async with self.db.read() as conn:
            return run_rows(await conn.execute(q))

    async def apply_batches(self, run_id: str, batches: Sequence[EngineBatch]) -> BatchOutcome:
        """Stores engine batches exactly once (see RuntimeService.Connect), all in one
        transaction: batches that queued up while the previous commit ran share the next
        one. A duplicate (already stored) or a gap (the engine resends in order) is only
        acknowledged."""
        pending = Pending()
        async with self.db.write(pending) as conn:
            row = await self.db.lock_run(conn, run_id)
            now = now_us()
            outcome = BatchOutcome(acked=row.last_batch, state=row.state)
            seq = row.last_sequence
            values: dict[str, Any] = {}
            for checked in batches:
                sequence = checked.batch.sequence
                if sequence != outcome.acked + 1:
                    continue
                seq = await self._apply(conn, pending, row, checked, seq, now, outcome, values)
                outcome.acked = sequence
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
        checked: EngineBatch,
        seq: int,
        now: int,
        outcome: BatchOutcome,
        values: dict[str, Any],
    ) -> int:
        """Appends one batch's events after `seq`; returns the new last sequence. Updates
        `outcome` (state, transitions, rejections) and the run's column `values`. The batch
        is consumed (a telemetry-only one becomes the segment)."""
        batch = checked.batch
        if (last := checked.last_progress) >= 0:
            values["progress"] = batch.entries[last].progress.SerializeToString()
        if checked.telemetry_only:
            # The batch's bytes are the segment (see Entry's field numbers), without parsing
            # them again. Unknown fields go first: Entry's reserved numbers are RunEvent
            # fields (state changes, outputs, ...) that an engine must never be able to write,
            # and Batch.sequence is no field of a segment.
            batch.DiscardUnknownFields()
            batch.ClearField("sequence")
            count = len(batch.entries)
            if count:
                segment = Segment(seq + 1, seq + count, batch.SerializeToString(), telemetry=True)
                pending.add(row.id, now, segment)
            return seq + count
        kinds = checked.kinds
        events: list[rp.RunEvent] = []
        facts: verdicts.Outputs | None = None  # read once, at the batch's first transition
        for index, entry in enumerate(batch.entries):
            which = kinds[index]
            if which == "log":
                ev = rp.RunEvent(log=entry.log)
            elif which == "metric":
                ev = rp.RunEvent(metric=entry.metric)
            elif which == "progress":
                ev = rp.RunEvent(progress=entry.progress)
            elif which == "transition":
                if facts is None:
                    facts = await self._outputs_of(conn, row)
                verdict = verdicts.judge_engine(outcome.state, entry.transition, facts)
                if verdict.refusal:
                    outcome.rejections.append(
                        rt.Rejection(sequence=batch.sequence, index=index, reason=verdict.refusal)
                    )
                    continue
                change, changes = _state_change(
                    outcome.state,
                    verdict.to_state,
                    verdict.error,
                    entry.transition.message,
                    "engine",
                    now,
                    row.cancellation,
                )
                values.update(changes)
                if verdict.to_state == S.RUN_STATE_INITIALIZED and entry.transition.source_sha256:
                    await self._record_source(conn, row.id, entry.transition.source_sha256, values)
                outcome.transitions.append((outcome.state, verdict.to_state))
                outcome.state = verdict.to_state
                ev = rp.RunEvent(state_change=change)
            else:
                continue
            seq += 1
            ev.sequence = seq
            events.append(ev)
        if events:
            append_events(pending, row.id, now, events)
        return seq

    async def _record_source(
        self, conn: AsyncConnection, run_id: str, sha256: str, values: dict[str, Any]
    ) -> None:
        """A development session's run records the source its engine loaded for it (the
        session reloads the tool for each run); other runs keep their version's."""
        spec = rp.Run.FromString(
            (await conn.execute(select(runs.c.spec).where(runs.c.id == run_id))).scalar_one()
        )
        if spec.dev_session_run and SHA256.fullmatch(sha256):
            spec.artifact_digest = f"sha256:{sha256}"
            values["spec"] = spec.SerializeToString()

    async def _outputs_of(self, conn: AsyncConnection, row: Any) -> verdicts.Outputs:
        """The facts a verdict on the run's proposed transitions reads."""
        present = (
            await conn.execute(select(artifacts.c.output_name).where(artifacts.c.run_id == row.id))
        ).scalars()
        return verdicts.Outputs(
            required=await self.tools.required_outputs_of(conn, row.tool_version),
            present=frozenset(present),
        )

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
        pending = Pending()
        async with self.db.write(pending) as conn:
            row = await self.db.lock_run(conn, run_id)
            verdict = verdicts.judge_control(row.state, to_state, error)
            if verdict.refusal:
                return False, row.state
            now = now_us()
            seq = row.last_sequence + 1
            change, values = _state_change(
                row.state, verdict.to_state, verdict.error, message, actor, now, row.cancellation
            )
            ev = rp.RunEvent(sequence=seq, state_change=change)
            append_events(pending, run_id, now, [ev])
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(last_sequence=seq, update_us=now, **values)
            )
        return True, to_state

    async def request_cancel(self, run_id: str, requested_by: str, reason: str) -> RunRow:
        """Phase one of a cancel: records who asked, why and when (once)."""
        pending = Pending()
        async with self.db.write(pending) as conn:
            row = await self.db.lock_run(conn, run_id)
            if not lifecycle.is_terminal(row.state) and row.cancellation is None:
                now = now_us()
                c = rp.Cancellation(
                    requested_by=requested_by, reason=reason, request_time=timestamp(now)
                )
                seq = row.last_sequence + 1
                ev = rp.RunEvent(sequence=seq, cancellation=c)
                append_events(pending, run_id, now, [ev])
                await conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id)
                    .values(last_sequence=seq, update_us=now, cancellation=c.SerializeToString())
                )
        found = await self.get_run_by_id(run_id)
        assert found is not None
        return found

    async def note(self, run_id: str, record: tm.LogRecord) -> None:
        """Adds a log line of the platform's own to the run's history (what the control
        plane is doing about it, e.g. waiting for an orchestrator)."""
        pending = Pending()
        async with self.db.write(pending) as conn:
            row = await self.db.lock_run(conn, run_id)
            now = now_us()
            seq = row.last_sequence + 1
            append_events(pending, run_id, now, [rp.RunEvent(sequence=seq, log=record)])
            await conn.execute(
                update(runs).where(runs.c.id == run_id).values(last_sequence=seq, update_us=now)
            )

    async def update_dev_config(self, run_id: str, config: rp.ConfigChange) -> None:
        """Replaces a development session's configuration and records the change."""
        pending = Pending()
        async with self.db.write(pending) as conn:
            row = await self.db.lock_run(conn, run_id)
            spec_row = (await conn.execute(select(runs.c.spec).where(runs.c.id == run_id))).one()
            spec = rp.Run.FromString(spec_row.spec)
            spec.config.CopyFrom(config.config)
            spec.config_sha256 = config.config_sha256
            now = now_us()
            seq = row.last_sequence + 1
            ev = rp.RunEvent(sequence=seq, config_change=config)
            append_events(pending, run_id, now, [ev])
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(spec=spec.SerializeToString(), last_sequence=seq, update_us=now)
            )


def _artifact_id(name: str) -> str:
    m = names.ARTIFACT_RE.match(name)
    assert m is not None, name  # inputs are resolved to artifact names before they are stored
    return m["artifact"]


async def _bind_inputs(conn: AsyncConnection, run_id: str, spec: rp.Run) -> None:
    """Records the artifacts a run reads, in the transaction that creates it: their foreign
    key keeps gc from deleting an artifact a run references, and fails this insert when gc
    deleted one first (see control.schema.run_inputs)."""
    rows = [
        {"run_id": run_id, "name": i.name, "artifact_id": _artifact_id(i.artifact)}
        for i in spec.inputs
    ]
    if rows:
        await conn.execute(insert(run_inputs), rows)


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
        values["queued_us"] = values["queue_reason"] = None  # an ended run waits no more
        if cancellation_blob:
            c = rp.Cancellation.FromString(cancellation_blob)
            c.complete_time.CopyFrom(timestamp(now))
            c.teardown.FromMicroseconds(now - c.request_time.ToMicroseconds())
            values["cancellation"] = c.SerializeToString()
    return change, values
