"""The fleet's records: orchestrators and their sessions, the run queue, placements, stops
to carry out, and tenant quotas (control.fleet decides; this stores)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, and_, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import fleet_pb2 as fp
from flnet.api.control.v1 import run_pb2 as rp
from flnet.control.clock import now_us, timestamp
from flnet.control.fleet.scheduler import Amounts, Decisions, QueuedRun, Quota, Site
from flnet.control.schema import orchestrators, runs, tenant_queues, tenant_quotas
from flnet.control.store.base import Database, Pending, RunRow, run_row, run_rows
from flnet.control.store.history import append_events
from flnet.errors import PermissionDenied

S = lc.RunState
ATTACHED = fp.ORCHESTRATOR_STATE_ATTACHED
DETACHED = fp.ORCHESTRATOR_STATE_DETACHED
LOST = fp.ORCHESTRATOR_STATE_LOST
# Serializes placement passes of replicas sharing one PostgreSQL (any constant; SQLite
# writers are serialized anyway).
PLACEMENT_LOCK = 0x666C6E6574  # "flnet"
# The tenants with queued runs, one index seek each (a loose scan of ix_runs_queued) rather
# than a scan of every queued run.
QUEUED_TENANTS = text(
    "WITH RECURSIVE t(tenant) AS ("
    " SELECT min(tenant) FROM runs WHERE queued_us IS NOT NULL"
    " UNION ALL SELECT (SELECT min(tenant) FROM runs"
    "  WHERE queued_us IS NOT NULL AND tenant > t.tenant) FROM t WHERE t.tenant IS NOT NULL"
    ") SELECT tenant FROM t WHERE tenant IS NOT NULL"
)


@dataclass(frozen=True)
class OrchestratorRow:
    name: str
    subject: str
    backend: str
    hostname: str
    labels: dict[str, str]
    cpu_millis: int
    memory_bytes: int
    run_slots: int
    state: int
    session: str
    attach_us: int
    seen_us: int
    acked_sequence: int

    def to_proto(self, load: Amounts | None = None) -> fp.Orchestrator:
        load = load or Amounts()
        return fp.Orchestrator(
            name=f"orchestrators/{self.name}",
            state=fp.OrchestratorState.ValueType(self.state),
            backend=self.backend,
            hostname=self.hostname,
            labels=self.labels,
            capacity=fp.ResourceAmounts(
                cpu_millis=self.cpu_millis, memory_bytes=self.memory_bytes, runs=self.run_slots
            ),
            load=fp.ResourceAmounts(
                cpu_millis=load.cpu_millis, memory_bytes=load.memory_bytes, runs=load.runs
            ),
            attach_time=timestamp(self.attach_us),
            heartbeat_time=timestamp(self.seen_us),
            subject=self.subject,
        )


def _orchestrator(r: Any) -> OrchestratorRow:
    return OrchestratorRow(
        name=r.name,
        subject=r.subject,
        backend=r.backend,
        hostname=r.hostname,
        labels=json.loads(r.labels),
        cpu_millis=r.cpu_millis,
        memory_bytes=r.memory_bytes,
        run_slots=r.run_slots,
        state=r.state,
        session=r.session,
        attach_us=r.attach_us,
        seen_us=r.seen_us,
        acked_sequence=r.acked_sequence,
    )


@dataclass(frozen=True)
class Registered:
    """What an orchestrator says of itself when it attaches."""

    name: str
    subject: str
    backend: str
    hostname: str
    labels: dict[str, str]
    cpu_millis: int
    memory_bytes: int
    run_slots: int


@dataclass
class Commands:
    """What an orchestrator is still to do: runs to launch, runs to stop (with grace, s)."""

    launches: list[RunRow] = field(default_factory=list)
    stops: list[tuple[RunRow, float]] = field(default_factory=list)


def _dialect_insert(conn: AsyncConnection, table: Table) -> Any:
    """INSERT with ON CONFLICT, in the connection's dialect (SQLite or PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def upsert(
    conn: AsyncConnection, table: Table, key: dict[str, Any], values: dict[str, Any]
) -> None:
    """Inserts the row of `key`, or updates it with `values` if it exists: one statement, so
    that concurrent first writes of one key do not collide."""
    statement = _dialect_insert(conn, table).values(**key, **values)
    await conn.execute(statement.on_conflict_do_update(index_elements=list(key), set_=values))


async def insert_new(conn: AsyncConnection, table: Table, values: dict[str, Any]) -> None:
    """Inserts the row unless its primary key exists."""
    await conn.execute(_dialect_insert(conn, table).values(**values).on_conflict_do_nothing())


class FleetStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ orchestrators

    async def attach(self, reg: Registered, session: str) -> OrchestratorRow:
        """Records an orchestrator's new session (replacing any other). PermissionDenied when
        the name is another client's."""
        now = now_us()
        values = {
            "subject": reg.subject,
            "backend": reg.backend,
            "hostname": reg.hostname,
            "labels": json.dumps(reg.labels, sort_keys=True),
            "cpu_millis": reg.cpu_millis,
            "memory_bytes": reg.memory_bytes,
            "run_slots": reg.run_slots,
            "state": ATTACHED,
            "session": session,
            "attach_us": now,
            "seen_us": now,
        }
        async with self.db.write() as conn:
            # The first registration of a name inserts it (two at once: one wins); then the
            # row is locked and must be the registering client's.
            await insert_new(conn, orchestrators, {"name": reg.name, "acked_sequence": 0, **values})
            found = (
                await conn.execute(
                    select(orchestrators).where(orchestrators.c.name == reg.name).with_for_update()
                )
            ).one()
            if found.subject != reg.subject:
                raise PermissionDenied(
                    f"orchestrator {reg.name!r} is registered by another client",
                    violations=[("registration.name", "registered by another client")],
                )
            await conn.execute(
                update(orchestrators).where(orchestrators.c.name == reg.name).values(**values)
            )
            row = (
                await conn.execute(select(orchestrators).where(orchestrators.c.name == reg.name))
            ).one()
        return _orchestrator(row)

    async def _update_session(self, name: str, session: str, **values: Any) -> bool:
        """Updates the orchestrator's row while `session` is its current one."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(orchestrators)
                .where(orchestrators.c.name == name, orchestrators.c.session == session)
                .values(**values)
            )
        return bool(result.rowcount)

    async def detach(self, name: str, session: str) -> None:
        """The session ended (the orchestrator is DETACHED until its lease runs out)."""
        await self._update_session(name, session, state=DETACHED, seen_us=now_us())

    async def seen(self, name: str, session: str, when_us: int) -> bool:
        """Renews the lease; False when another session has replaced this one."""
        return await self._update_session(name, session, seen_us=when_us)

    async def acked(self, name: str, session: str, sequence: int) -> bool:
        return await self._update_session(name, session, acked_sequence=sequence)

    async def set_capacity(
        self, name: str, session: str, cpu_millis: int, memory_bytes: int, run_slots: int
    ) -> bool:
        return await self._update_session(
            name, session, cpu_millis=cpu_millis, memory_bytes=memory_bytes, run_slots=run_slots
        )

    async def get(self, name: str) -> OrchestratorRow | None:
        async with self.db.read() as conn:
            r = (
                await conn.execute(select(orchestrators).where(orchestrators.c.name == name))
            ).first()
        return _orchestrator(r) if r else None

    async def orchestrators(self) -> list[OrchestratorRow]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(orchestrators).order_by(orchestrators.c.name))).all()
        return [_orchestrator(r) for r in rows]

    async def loads(self) -> dict[str, Amounts]:
        """What the runs placed on each orchestrator and not ended reserve."""
        async with self.db.read() as conn:
            return (await self._placed(conn))[0]

    async def mark_lost(self, name: str, seen_before_us: int) -> bool:
        """LOST, if still silent since before `seen_before_us` (one replica wins)."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(orchestrators)
                .where(
                    orchestrators.c.name == name,
                    orchestrators.c.state != LOST,
                    orchestrators.c.seen_us < seen_before_us,
                )
                .values(state=LOST)
            )
        return bool(result.rowcount)

    # -------------------------------------------------------------------------- queue

    async def queue_position(self, row: RunRow) -> int:
        """1 for the next of its tenant's queued runs."""
        if row.queued_us is None:
            return 0
        q = select(func.count()).where(
            runs.c.tenant == row.tenant,
            runs.c.queued_us.is_not(None),
            or_(
                runs.c.queued_us < row.queued_us,
                and_(runs.c.queued_us == row.queued_us, runs.c.id < row.id),
            ),
        )
        async with self.db.read() as conn:
            return int((await conn.execute(q)).scalar_one()) + 1

    async def place(
        self,
        decide: Callable[
            [list[Site], dict[str, list[QueuedRun]], dict[str, Amounts], dict[str, Quota]],
            Decisions,
        ],
        heads: int,
    ) -> Decisions:
        """One placement pass in one transaction (on PostgreSQL under an advisory lock that
        serializes the replicas' passes): reads the attached orchestrators, the loads, the
        tenants' usage and quotas and the first `heads` queued runs of each tenant, lets
        `decide` choose, and records its placements and the waiting tenants' reasons."""
        async with self.db.write() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text(f"SELECT pg_advisory_xact_lock({PLACEMENT_LOCK})"))
            loads, usage = await self._placed(conn)
            sites = await self._sites(conn, loads)
            free = sum(max(0, s.run_slots - s.load.runs) for s in sites)
            # No more can be placed than there are free slots; one more per tenant says why
            # the rest waits (runs passed over are read again next pass).
            queues = await self._queues(conn, min(heads, free + 1))
            if not queues:
                return Decisions()
            quotas = {
                r.tenant: Quota(r.max_runs, r.max_cpu_millis, r.max_memory_bytes)
                for r in (await conn.execute(select(tenant_quotas))).all()
            }
            decisions = decide(sites, queues, usage, quotas)
            now = now_us()
            placed = []
            for p in decisions.placements:
                result = await conn.execute(
                    update(runs)
                    .where(runs.c.id == p.run.id, runs.c.queued_us.is_not(None))
                    .values(
                        orchestrator=p.orchestrator,
                        assigned_us=now,
                        queued_us=None,
                        queue_reason=None,
                    )
                )
                if result.rowcount:
                    placed.append(p)
            decisions.placements = placed
            await self._record_reasons(conn, queues, decisions, now)
            for run_id, reason in decisions.run_reasons.items():
                await conn.execute(
                    update(runs)
                    .where(
                        runs.c.id == run_id,
                        or_(runs.c.queue_reason.is_(None), runs.c.queue_reason != reason),
                    )
                    .values(queue_reason=reason)
                )
        return decisions

    async def _record_reasons(
        self, conn: AsyncConnection, queues: dict[str, list[QueuedRun]], out: Decisions, now: int
    ) -> None:
        """Why each tenant's queue waits, where it changed ("" once it does not)."""
        stored = {
            r.tenant: r.reason
            for r in await conn.execute(
                select(tenant_queues).where(tenant_queues.c.tenant.in_(list(queues)))
            )
        }
        for tenant in queues:
            reason = out.reasons.get(tenant, "")
            if stored.get(tenant, "") != reason:
                values = {"reason": reason, "update_us": now}
                await upsert(conn, tenant_queues, {"tenant": tenant}, values)

    async def tenant_reasons(self, tenants: Sequence[str]) -> dict[str, str]:
        """Why the queues of `tenants` wait (tenants whose queue waits for nothing left out)."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(tenant_queues).where(
                    tenant_queues.c.tenant.in_(list(tenants)), tenant_queues.c.reason != ""
                )
            )
            return {r.tenant: r.reason for r in rows}

    async def _placed(self, conn: AsyncConnection) -> tuple[dict[str, Amounts], dict[str, Amounts]]:
        """What placed runs not ended reserve, by orchestrator and by tenant: one range of
        ix_runs_placed, in its order."""
        rows = await conn.execute(
            select(
                runs.c.orchestrator,
                runs.c.tenant,
                func.coalesce(func.sum(runs.c.cpu_millis), 0),
                func.coalesce(func.sum(runs.c.memory_bytes), 0),
                func.count(),
            )
            .where(runs.c.orchestrator.is_not(None), runs.c.end_us.is_(None))
            .group_by(runs.c.orchestrator, runs.c.tenant)
        )
        loads: dict[str, Amounts] = {}
        usage: dict[str, Amounts] = {}
        for orchestrator, tenant, cpu, memory, count in rows:
            for key, into in ((orchestrator, loads), (tenant, usage)):
                total = into.setdefault(key, Amounts())
                total.cpu_millis += int(cpu)
                total.memory_bytes += int(memory)
                total.runs += int(count)
        return loads, usage

    async def _sites(self, conn: AsyncConnection, loads: dict[str, Amounts]) -> list[Site]:
        rows = (
            await conn.execute(select(orchestrators).where(orchestrators.c.state == ATTACHED))
        ).all()
        return [
            Site(
                r.name,
                r.cpu_millis,
                r.memory_bytes,
                r.run_slots,
                json.loads(r.labels),
                loads.get(r.name, Amounts()),
            )
            for r in rows
        ]

    async def _queues(self, conn: AsyncConnection, heads: int) -> dict[str, list[QueuedRun]]:
        """The first `heads` queued runs of each tenant, oldest first (ix_runs_queued: a
        short range of the index per tenant, whatever the queue's length)."""
        queued = runs.c.queued_us.is_not(None)
        tenants = (await conn.execute(QUEUED_TENANTS)).scalars()
        queues: dict[str, list[QueuedRun]] = {}
        for tenant in list(tenants):
            rows = await conn.execute(
                select(
                    runs.c.id,
                    runs.c.queued_us,
                    runs.c.cpu_millis,
                    runs.c.memory_bytes,
                    runs.c.required_labels,
                )
                .where(runs.c.tenant == tenant, queued)
                .order_by(runs.c.queued_us, runs.c.id)
                .limit(heads)
            )
            queues[tenant] = [
                QueuedRun(
                    r.id,
                    tenant,
                    r.queued_us,
                    r.cpu_millis,
                    r.memory_bytes,
                    tuple(r.required_labels.split()),
                )
                for r in rows
            ]
        return queues

    async def requeue(self, run_id: str, orchestrator: str, message: str) -> bool:
        """Puts a PENDING run placed on `orchestrator` back in the queue (at its old place:
        it keeps its creation time), with a line in its history saying why."""
        pending = Pending()
        async with self.db.write(pending) as conn:
            row = await self.db.lock_run(conn, run_id)
            placed = (
                await conn.execute(
                    select(runs.c.orchestrator, runs.c.create_us).where(runs.c.id == run_id)
                )
            ).one()
            if row.state != S.RUN_STATE_PENDING or placed.orchestrator != orchestrator:
                return False
            now = now_us()
            seq = row.last_sequence + 1
            record = tm.LogRecord(
                time=timestamp(now),
                severity=tm.LOG_SEVERITY_WARNING,
                message=message,
                logger="flnet.control",
            )
            append_events(pending, run_id, now, [rp.RunEvent(sequence=seq, log=record)])
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    orchestrator=None,
                    assigned_us=None,
                    launched_us=None,
                    stop_grace_ms=None,
                    queued_us=placed.create_us,
                    last_sequence=seq,
                    update_us=now,
                )
            )
        return True

    # ------------------------------------------------------------------------ commands

    async def commands(self, orchestrator: str) -> Commands:
        """The launches and stops `orchestrator` has not confirmed yet."""
        q = select(runs).where(
            runs.c.orchestrator == orchestrator,
            or_(
                and_(runs.c.state == S.RUN_STATE_PENDING, runs.c.launched_us.is_(None)),
                runs.c.stop_grace_ms.is_not(None),
            ),
        )
        out = Commands()
        async with self.db.read() as conn:
            for r in (await conn.execute(q)).all():
                row = run_row(r)
                if r.stop_grace_ms is not None:
                    out.stops.append((row, r.stop_grace_ms / 1000))
                elif row.cancellation is None:
                    out.launches.append(row)
        return out

    async def launched(self, run_id: str, orchestrator: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.orchestrator == orchestrator)
                .values(launched_us=func.coalesce(runs.c.launched_us, now_us()))
            )

    async def request_stop(self, run_id: str, grace: float) -> str | None:
        """Records a stop for the run's orchestrator to carry out; returns that orchestrator
        (None: the run is placed nowhere, nothing to stop)."""
        async with self.db.write() as conn:
            found = (
                await conn.execute(select(runs.c.orchestrator).where(runs.c.id == run_id))
            ).first()
            if found is None or found.orchestrator is None:
                return None
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.stop_grace_ms.is_(None))
                .values(stop_grace_ms=int(grace * 1000))
            )
        return str(found.orchestrator)

    async def stopped(self, run_id: str, orchestrator: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.orchestrator == orchestrator)
                .values(stop_grace_ms=None)
            )

    async def placed_on(self, orchestrator: str) -> list[RunRow]:
        """The runs placed on `orchestrator` and not ended."""
        q = select(runs).where(runs.c.orchestrator == orchestrator, runs.c.end_us.is_(None))
        async with self.db.read() as conn:
            return run_rows(await conn.execute(q))

    async def assigned_to(self, run_ids: Sequence[str]) -> dict[str, str | None]:
        """Where each of `run_ids` is placed (runs that do not exist are left out)."""
        if not run_ids:
            return {}
        q = select(runs.c.id, runs.c.orchestrator).where(runs.c.id.in_(list(run_ids)))
        async with self.db.read() as conn:
            return {r.id: r.orchestrator for r in (await conn.execute(q)).all()}

    # -------------------------------------------------------------------------- quotas

    async def quota(self, tenant: str, default: Quota) -> tuple[Quota, int | None, str]:
        """The tenant's quota, when it was set and by whom (None, "": the default)."""
        async with self.db.read() as conn:
            r = (
                await conn.execute(select(tenant_quotas).where(tenant_quotas.c.tenant == tenant))
            ).first()
        if r is None:
            return default, None, ""
        return Quota(r.max_runs, r.max_cpu_millis, r.max_memory_bytes), r.update_us, r.updated_by

    async def set_quota(self, tenant: str, quota: Quota, actor: str) -> int:
        now = now_us()
        values = {
            "max_runs": quota.max_runs,
            "max_cpu_millis": quota.max_cpu_millis,
            "max_memory_bytes": quota.max_memory_bytes,
            "update_us": now,
            "updated_by": actor,
        }
        async with self.db.write() as conn:
            await upsert(conn, tenant_quotas, {"tenant": tenant}, values)
        return now

    async def tenant_usage(self, tenant: str) -> tuple[Amounts, int]:
        """What the tenant's placed active runs reserve, and how many of its runs wait."""
        q = select(func.count()).where(runs.c.tenant == tenant, runs.c.queued_us.is_not(None))
        async with self.db.read() as conn:
            used = (await self._placed(conn))[1]
            queued = int((await conn.execute(q)).scalar_one())
        return used.get(tenant, Amounts()), queued
