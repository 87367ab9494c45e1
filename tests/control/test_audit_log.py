"""The persisted audit log: AuditLog against the session's database (SQLite or PostgreSQL,
tests.postgres; migrated like the control plane's), and AuditService.ListAuditEvents called
directly (the end-to-end gRPC tests with tokens live with the interceptor's)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from flnet.api.control.v1 import audit_service_pb2 as aus
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.control.database import create_engine, migrate, write_lock
from flnet.control.news import RunFeed
from flnet.control.schema import audit_events
from flnet.control.services.audit_service import SERVICE_NAME, AuditService
from flnet.control.store import Store
from flnet.control.store.audit import MAX_FIELD_CHARS, AuditLog
from flnet.errors import InvalidArgument
from flnet.server.auth import MethodPolicy, Principal, use_principal
from flnet.server.auth.audit import AuditRecord
from tests.postgres import SQLITE, backend, database_url

T0 = 1_700_000_000_000_000
GET_RUN = "/flnet.api.control.v1.RunService/GetRun"
CREATE_RUN = "/flnet.api.control.v1.RunService/CreateRun"


def rec(i: int = 0, **fields: object) -> AuditRecord:
    values: dict[str, object] = {
        "time_us": T0 + i * 1_000_000,
        "duration_us": 1500 + i,
        "subject": "alice",
        "tenant": "acme",
        "client_id": "flnet-cli",
        "audience": "user",
        "method": GET_RUN,
        "resource": f"tenants/acme/runs/r-{i}",
        "code": "OK",
        "reason": "",
    }
    values.update(fields)
    return AuditRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url(tmp_path))
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def audit(engine: AsyncEngine) -> AsyncIterator[AuditLog]:
    log = AuditLog(engine)
    yield log
    await log.close()


async def stored(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return len((await conn.execute(select(audit_events.c.id))).all())


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Polls the database (the writer signals nothing) for up to 5 s."""
    for _ in range(500):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


# --- the store ---------------------------------------------------------------------------


async def test_records_are_stored_by_flush_newest_first(
    audit: AuditLog, engine: AsyncEngine
) -> None:
    records = [rec(i) for i in range(3)]
    for r in records:
        audit.record(r)
    assert audit.pending == 3
    assert await audit.list("acme") == []
    await audit.flush()
    assert audit.pending == 0
    rows = await audit.list("acme")
    assert [r.resource for r in rows] == [f"tenants/acme/runs/r-{i}" for i in (2, 1, 0)]
    assert rows[0].id > rows[1].id > rows[2].id
    for row, r in zip(rows, reversed(records), strict=True):
        assert dataclasses.asdict(row) == {"id": row.id, **dataclasses.asdict(r)}


async def test_a_stored_row_holds_the_records_fields_and_nothing_else(
    audit: AuditLog, engine: AsyncEngine
) -> None:
    r = rec(1, code="PERMISSION_DENIED", reason="SCOPE_MISSING")
    audit.record(r)
    await audit.flush()
    async with engine.connect() as conn:
        row = (await conn.execute(select(audit_events))).one()._asdict()
    assert set(row) == {"id"} | {f.name for f in dataclasses.fields(AuditRecord)}
    assert {k: v for k, v in row.items() if k != "id"} == dataclasses.asdict(r)


async def test_pages_go_back_in_time_by_id(audit: AuditLog) -> None:
    for i in range(7):
        audit.record(rec(i))
    await audit.flush()
    seen: list[str] = []
    before: int | None = None
    while True:
        page = await audit.list("acme", before_id=before, limit=3)
        seen += [r.resource for r in page]
        if len(page) < 3:
            break
        before = page[-1].id
    assert seen == [f"tenants/acme/runs/r-{i}" for i in reversed(range(7))]


async def test_filters_match_exactly_and_times_select_the_start(audit: AuditLog) -> None:
    audit.record(rec(0))
    audit.record(rec(1, subject="bob", code="NOT_FOUND", reason="RUN_NOT_FOUND"))
    audit.record(rec(2, method=CREATE_RUN, resource="tenants/acme"))
    audit.record(rec(3, subject="bob"))
    await audit.flush()

    async def resources(**filters: object) -> list[str]:
        return [r.resource for r in await audit.list("acme", **filters)]  # type: ignore[arg-type]

    assert await resources(subject="bob") == ["tenants/acme/runs/r-3", "tenants/acme/runs/r-1"]
    assert await resources(subject="bo") == []
    assert await resources(subject="bo\x00b") == []  # stored text holds no NUL
    assert await resources(code="NOT_FOUND") == ["tenants/acme/runs/r-1"]
    assert await resources(method=CREATE_RUN) == ["tenants/acme"]
    assert await resources(resource="tenants/acme/runs/r-0") == ["tenants/acme/runs/r-0"]
    assert await resources(subject="bob", code="OK") == ["tenants/acme/runs/r-3"]
    # From inclusive, to exclusive.
    window = await resources(time_from_us=T0 + 1_000_000, time_to_us=T0 + 3_000_000)
    assert window == ["tenants/acme", "tenants/acme/runs/r-1"]


async def test_tenants_are_separate_and_refused_calls_belong_to_none(audit: AuditLog) -> None:
    audit.record(rec(0))
    audit.record(rec(1, tenant="other", resource="tenants/other/runs/x"))
    refused = rec(2, subject="", tenant="", client_id="", audience="", code="UNAUTHENTICATED")
    audit.record(refused)
    await audit.flush()
    assert [r.resource for r in await audit.list("acme")] == ["tenants/acme/runs/r-0"]
    assert [r.resource for r in await audit.list("other")] == ["tenants/other/runs/x"]
    # Kept for operators: only a query for the empty tenant finds it, which no API can make.
    assert [r.code for r in await audit.list("")] == ["UNAUTHENTICATED"]


async def test_a_full_buffer_drops_without_blocking_and_warns_once_per_burst(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    audit = AuditLog(engine, capacity=5)
    with caplog.at_level(logging.WARNING, logger="flnet.control.store.audit"):
        started = time.monotonic()
        for i in range(8):
            audit.record(rec(i))
        assert time.monotonic() - started < 0.5
        assert (audit.pending, audit.dropped) == (5, 3)
        assert len([r for r in caplog.records if "buffer is full" in r.message]) == 1
        await audit.flush()
        assert any("dropped 3 records" in r.message for r in caplog.records)
        for i in range(7):
            audit.record(rec(i))
        assert len([r for r in caplog.records if "buffer is full" in r.message]) == 2
    assert audit.dropped == 5
    await audit.close()
    assert await stored(engine) == 10


async def test_the_writer_stores_a_complete_batch_at_once(engine: AsyncEngine) -> None:
    audit = AuditLog(engine, batch_size=10, interval=60)
    audit.start()
    try:
        for i in range(10):
            audit.record(rec(i))

        async def all_stored() -> bool:
            return await stored(engine) == 10

        await eventually(all_stored)
    finally:
        await audit.close()


async def test_the_writer_stores_the_rest_after_its_interval(engine: AsyncEngine) -> None:
    audit = AuditLog(engine, interval=0.05)
    audit.start()
    try:
        audit.record(rec(0))

        async def one_stored() -> bool:
            return await stored(engine) == 1

        await eventually(one_stored)
    finally:
        await audit.close()


async def test_close_stores_what_is_buffered_and_later_records_are_dropped(
    engine: AsyncEngine,
) -> None:
    audit = AuditLog(engine, interval=60)
    audit.start()
    for i in range(3):
        audit.record(rec(i))
    await audit.close()
    assert await stored(engine) == 3
    audit.record(rec(4))
    assert (audit.pending, audit.dropped) == (0, 1)


async def test_a_failed_write_keeps_the_records_for_the_next(tmp_path: Path) -> None:
    engine = create_engine(database_url(tmp_path, migrated=False))
    try:
        audit = AuditLog(engine)
        audit.record(rec(0))
        audit.record(rec(1))
        with pytest.raises(Exception, match="audit_events"):
            await audit.flush()  # not migrated yet: no table
        assert audit.pending == 2
        await migrate(engine)
        await audit.flush()
        assert [r.resource for r in await audit.list("acme")] == [
            "tenants/acme/runs/r-1",
            "tenants/acme/runs/r-0",
        ]
    finally:
        await engine.dispose()


async def test_caller_supplied_text_is_bounded_and_storable(audit: AuditLog) -> None:
    audit.record(rec(0, resource="x" * 100_000, method="/a\x00b/c"))
    await audit.flush()
    (row,) = await audit.list("acme")
    assert row.resource == "x" * MAX_FIELD_CHARS
    assert row.method == "/a\ufffdb/c"


async def test_the_log_and_the_store_write_at_once(engine: AsyncEngine) -> None:
    store = Store(engine, RunFeed())
    audit = AuditLog(engine, batch_size=20)
    if backend() == SQLITE:
        # They share one write lock, which serializes their transactions.
        assert store.db._write_lock is write_lock(engine) is audit._write_lock
    else:
        assert store.db._write_lock is None and audit._write_lock is None
    # Audit batches commit between the store's read-then-write transactions: none of them
    # fails (on SQLite, with "database is locked").
    for i in range(2000):
        audit.record(rec(i))

    async def register(i: int) -> None:
        version = tp.ToolVersion(version="1.0.0", kind="python", contract_sha256=f"{i:064x}")
        await store.tools.put_tool_version("acme", f"tool-{i}", version)

    await asyncio.gather(audit.flush(), *(register(i) for i in range(50)))
    assert await stored(engine) == 2000
    assert len(await store.tools.list_tools("acme", limit=100)) == 50


# --- the service -------------------------------------------------------------------------


@pytest.fixture
def auditor() -> Iterator[Principal]:
    principal = Principal(
        subject="audrey",
        audience="user",
        issuer="https://issuer.test",
        tenant="acme",
        scopes=frozenset({"audit:read"}),
    )
    with use_principal(principal):
        yield principal


# The service reads nothing of its context: these tests call it directly.
NO_CONTEXT: Any = None


def ts(us: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=us // 1_000_000, nanos=us % 1_000_000 * 1000)


async def list_events(service: AuditService, **fields: object) -> aus.ListAuditEventsResponse:
    request = aus.ListAuditEventsRequest(parent="tenants/acme", **fields)  # type: ignore[arg-type]
    return await service.ListAuditEvents(request, NO_CONTEXT)


async def bad_fields(service: AuditService, **fields: object) -> list[str]:
    with pytest.raises(InvalidArgument) as e:
        await list_events(service, **fields)
    return [v.field for v in e.value.violations]


def test_list_audit_events_needs_audit_read_as_a_user() -> None:
    policy = MethodPolicy.from_services([SERVICE_NAME])
    requirement = policy.declared(f"/{SERVICE_NAME}/ListAuditEvents")
    assert requirement.audience == "user"
    assert requirement.scopes == {"audit:read"}


async def test_list_audit_events_pages_newest_first(audit: AuditLog, auditor: Principal) -> None:
    for i in range(5):
        audit.record(rec(i, code="NOT_FOUND" if i % 2 else "OK", reason="X" if i % 2 else ""))
    audit.record(rec(9, tenant="other"))
    await audit.flush()
    service = AuditService(audit)
    seen = []
    token = ""
    while True:
        res = await list_events(service, page_size=2, page_token=token)
        seen += list(res.events)
        token = res.next_page_token
        if not token:
            break
    assert [e.resource for e in seen] == [f"tenants/acme/runs/r-{i}" for i in (4, 3, 2, 1, 0)]
    first = seen[-1]
    assert first.sequence > 0 and first.tenant == "acme" and first.subject == "alice"
    assert (first.client_id, first.audience, first.method) == ("flnet-cli", "user", GET_RUN)
    assert first.time == ts(T0)
    assert first.duration.ToMicroseconds() == 1500
    assert (seen[1].code, seen[1].reason) == ("NOT_FOUND", "X")


async def test_list_audit_events_filters(audit: AuditLog, auditor: Principal) -> None:
    for i in range(4):
        audit.record(rec(i, code="NOT_FOUND" if i % 2 else "OK"))
    await audit.flush()
    service = AuditService(audit)

    async def resources(**fields: object) -> list[str]:
        return [e.resource for e in (await list_events(service, **fields)).events]

    assert await resources(code="NOT_FOUND") == ["tenants/acme/runs/r-3", "tenants/acme/runs/r-1"]
    assert await resources(subject="bob") == []
    assert await resources(method=GET_RUN, resource="tenants/acme/runs/r-2") == [
        "tenants/acme/runs/r-2"
    ]
    window = await resources(time_start=ts(T0 + 1_000_000), time_end=ts(T0 + 3_000_000))
    assert window == ["tenants/acme/runs/r-2", "tenants/acme/runs/r-1"]
    # A token belongs to its filters.
    res = await list_events(service, page_size=1)
    assert await bad_fields(service, page_token=res.next_page_token, code="OK") == ["page_token"]


async def test_list_audit_events_refuses_bad_filters(audit: AuditLog, auditor: Principal) -> None:
    service = AuditService(audit)
    assert await bad_fields(service, code="NOPE") == ["code"]
    assert await bad_fields(service, code="not_found") == ["code"]
    assert await bad_fields(service, method="RunService/GetRun") == ["method"]
    assert await bad_fields(service, time_start=ts(T0), time_end=ts(T0 - 1)) == ["time_end"]
    assert await bad_fields(service, time_start=timestamp_pb2.Timestamp(nanos=-1)) == [
        "time_start.nanos"
    ]
    assert await bad_fields(service, code="NOPE", method="x") == ["method", "code"]
    assert await bad_fields(service, page_size=-1) == ["page_size"]
    assert await bad_fields(service, page_token="garbage") == ["page_token"]
    with pytest.raises(InvalidArgument) as e:
        await service.ListAuditEvents(aus.ListAuditEventsRequest(parent="acme"), NO_CONTEXT)
    assert [v.field for v in e.value.violations] == ["parent"]
