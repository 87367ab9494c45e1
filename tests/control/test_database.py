"""The provenance database behaves alike on SQLite and PostgreSQL (`--database`): migrations,
how concurrent writers are kept apart, what text either accepts, batched inserts, paging."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, func, inspect, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.common.v1.lifecycle_pb2 import RunState
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control.database import (
    create_engine,
    current_revision,
    head_revision,
    loop_reader,
    migrate,
    upgrade,
    write_lock,
)
from flnet.control.engine_batches import EngineBatch, checked
from flnet.control.news import RunFeed
from flnet.control.schema import artifacts, metadata, run_events, runs
from flnet.control.store import Store
from flnet.errors import InvalidArgument
from flnet.structs import dict_to_struct
from tests.conftest import FIXTURES, TENANT, Clients
from tests.postgres import POSTGRESQL, SQLITE, backend, database_url
from tests.status import violations

TOOL_VERSION = "tenants/acme/tools/noop/versions/1.0.0"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url(tmp_path))
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> Store:
    return Store(engine, RunFeed())


async def new_run(store: Store, run_id: str | None = None) -> str:
    run_id = run_id or uuid.uuid4().hex[:20]
    await store.runs.create_run(
        run_id=run_id,
        tenant="acme",
        tool="noop",
        spec=rp.Run(tool_version=TOOL_VERSION, creator="alice"),
        request_sha256="0" * 64,
        credential_sha256=uuid.uuid4().hex * 2,
        deadline_us=None,
    )
    return run_id


async def add_input(store: Store, sha256: str, **fields: Any) -> ap.Artifact:
    values: dict[str, Any] = {
        "artifact_id": uuid.uuid4().hex[:20],
        "tenant": "acme",
        "sha256": sha256,
        "size": 3,
        "media_type": "text/csv",
        "filename": "data.csv",
        "uri": f"file:///blobs/{sha256}",
    }
    values.update(fields)
    return await store.artifacts.add_input_artifact(**values)


# --- migrations ----------------------------------------------------------------------------


async def test_upgrade_brings_an_empty_database_to_head_once(tmp_path: Path) -> None:
    url = database_url(tmp_path / "fresh", migrated=False)
    assert await upgrade(url) == head_revision()
    assert await upgrade(url) == head_revision()  # nothing left to do
    engine = create_engine(url)
    try:
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            indexes = await conn.run_sync(
                lambda c: {i["name"] for i in inspect(c).get_indexes("runs")}
            )
    finally:
        await engine.dispose()
    assert {"tools", "tool_versions", "runs", "run_events", "artifacts", "uploads"} <= tables
    assert {"audit_events", "alembic_version"} <= tables
    assert {"ix_runs_tenant_tool_created", "ix_runs_tenant_state_created"} <= indexes


async def test_the_migrations_build_the_schema_the_code_declares(tmp_path: Path) -> None:
    """control.schema (what the store's queries are written against) and the migrations
    (what databases really have) agree: tables, columns, types and indexes."""
    engine = create_engine(database_url(tmp_path))
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            differences = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []


async def test_control_planes_starting_at_once_migrate_one_after_the_other(
    tmp_path: Path,
) -> None:
    if backend() != POSTGRESQL:
        pytest.skip("several control planes share a PostgreSQL database only")
    url = database_url(tmp_path, migrated=False)
    engines = [create_engine(url) for _ in range(4)]
    try:
        await asyncio.gather(*(migrate(e) for e in engines))
        assert await current_revision(engines[0]) == head_revision()
    finally:
        for e in engines:
            await e.dispose()


# --- concurrent writers ----------------------------------------------------------------------


async def test_only_sqlite_writers_take_turns(engine: AsyncEngine, store: Store) -> None:
    lock = write_lock(engine)
    if backend() == SQLITE:
        assert isinstance(lock, asyncio.Lock) and store.db._write_lock is lock
    else:
        assert lock is None and store.db._write_lock is None


async def test_sqlite_reads_on_the_loop_see_every_commit_and_write_nothing(
    engine: AsyncEngine, store: Store
) -> None:
    """SQLite reads run on the loop's thread, on connections of their own: a commit of the
    async writer is read at once, and the reader cannot write (query_only)."""
    reader = loop_reader(engine)
    if backend() != SQLITE:
        assert reader is None
        return
    assert reader is not None
    run_id = await new_run(store)
    assert (await store.runs.get_run("acme", run_id)).state == RunState.RUN_STATE_PENDING
    await store.runs.transition(run_id, RunState.RUN_STATE_CANCELLED, actor="alice")
    assert (await store.runs.get_run("acme", run_id)).state == RunState.RUN_STATE_CANCELLED
    with reader.connect() as conn:
        pooled = conn.connection.dbapi_connection
        with pytest.raises(OperationalError, match="readonly"):
            conn.execute(runs.delete())
    await engine.dispose()  # its reader's connections go with it
    assert pooled is not None
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        pooled.execute("SELECT 1")


async def test_uploads_of_the_same_content_at_once_are_one_artifact(
    engine: AsyncEngine, store: Store
) -> None:
    sha = "ab" * 32
    stored = await asyncio.gather(*(add_input(store, sha) for _ in range(10)))
    assert len({a.name for a in stored}) == 1
    async with engine.connect() as conn:
        count = (
            await conn.execute(select(func.count()).where(artifacts.c.sha256 == sha))
        ).scalar_one()
    assert count == 1
    # Another tenant's identical content is its own.
    other = await add_input(store, sha, tenant="other")
    assert other.name != stored[0].name


async def test_many_new_inputs_on_one_connection(store: Store) -> None:
    """PostgreSQL plans a prepared statement generically after a few executions: the insert's
    ON CONFLICT must still find the partial unique index."""
    stored = [await add_input(store, f"{i:02d}" * 32) for i in range(12)]
    assert len({a.name for a in stored}) == 12


async def test_batches_of_one_run_at_once_leave_no_gaps(store: Store) -> None:
    """Concurrent commits of one run (a resent batch racing the original, cancel meeting a
    batch): its row lock (or SQLite's write lock) orders them; sequences stay contiguous."""
    run_id = await new_run(store)

    def batch(n: int) -> EngineBatch:
        return checked(
            rt.Batch(
                sequence=n,
                entries=[rt.Entry(log=tm.LogRecord(message=f"{n}.{i}")) for i in range(5)],
            )
        )

    await asyncio.gather(
        *(store.runs.apply_batches(run_id, [batch(n)]) for n in (1, 1, 1)),
        store.runs.request_cancel(run_id, "bob", "enough"),
    )
    await asyncio.gather(
        *(store.runs.apply_batches(run_id, [batch(2), batch(3)]) for _ in range(3))
    )
    run = await store.runs.get_run("acme", run_id)
    response = rs.ListRunEventsResponse()
    added, _, _ = await store.history.read_events(run, response, after=0, limit=1000)
    assert [e.sequence for e in response.events] == list(range(1, added + 1))
    logs = [e.log.message for e in response.events if e.HasField("log")]
    assert logs == [f"{n}.{i}" for n in (1, 2, 3) for i in range(5)]
    assert run.last_batch == 3 and run.last_sequence == added == 1 + 1 + 15


# --- telemetry ingestion -------------------------------------------------------------------


async def test_a_transaction_inserts_its_history_segments_in_one_statement(
    engine: AsyncEngine, store: Store
) -> None:
    run_id = await new_run(store)
    inserts: list[tuple[bool, int]] = []

    def count(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if statement.lstrip().upper().startswith(f"INSERT INTO {run_events.name.upper()}"):
            inserts.append((many, len(params) if many else 1))

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        batches = [
            checked(
                rt.Batch(sequence=n, entries=[rt.Entry(log=tm.LogRecord(message=str(n)))] * 100)
            )
            for n in range(1, 9)
        ]
        outcome = await store.runs.apply_batches(run_id, batches)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert outcome.acked == 8
    # Eight segments, one statement with eight parameter sets (the driver batches them).
    assert inserts == [(True, 8)]
    assert await store.history.count_events(run_id) == 1 + 800


# --- what either database stores -------------------------------------------------------------


async def test_text_postgresql_refuses_is_refused_on_either(store: Store) -> None:
    for fields, field in [
        ({"filename": "a\x00b.csv"}, "filename"),
        ({"filename": "x" * 256}, "filename"),
        ({"media_type": "text/\x00"}, "media_type"),
    ]:
        with pytest.raises(InvalidArgument) as e:
            await add_input(store, "cd" * 32, **fields)
        assert [v[0] for v in e.value.violations] == [field]
    stored = await add_input(store, "cd" * 32, filename="é" * 255)  # characters, not bytes
    assert stored.filename == "é" * 255
    big = await add_input(store, "ef" * 32, size=2**62)
    assert big.size_bytes == 2**62
    with pytest.raises(InvalidArgument):
        await store.runs.find_run_by_request("acme", "r\x00")


async def test_the_api_refuses_nul_and_overlong_text_alike(api: Clients) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.upload(b"x,y\n", filename="in\x00put.csv")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == ["metadata.filename"]  # a control character, named first

    version = await api.register(FIXTURES / "tools" / "noop")
    artifact = await api.upload(b"a,b\n1,2\n")
    request = rs.CreateRunRequest(
        parent=TENANT,
        request_id="retry\x00me",
        run=rp.Run(
            tool_version=version.name,
            config=dict_to_struct({"rate": 0.1}),
            inputs=[rp.RunInput(name="data", artifact=artifact)],
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(request)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == ["request_id"]

    changed = ts.CreateToolVersionRequest(parent=version.name.rsplit("/versions/", 1)[0])
    changed.tool_version.CopyFrom(version)
    changed.tool_version.version = "9.9.9"
    changed.tool_version.kind = "k" * 64
    changed.tool_version.description = "nul\x00"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.tools.CreateToolVersion(changed)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == ["tool_version.kind", "tool_version.description"]


async def test_a_forged_page_token_is_refused_not_a_database_error(api: Clients) -> None:
    """Page tokens are opaque, not sealed: one carrying what no database takes as a
    parameter (NUL in text, an integer past 64 bits) is malformed, on either."""
    await api.upload(b"1\n", filename="one.csv")
    await api.upload(b"2\n", filename="two.csv")
    first = await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT, page_size=1))
    token = first.next_page_token
    issued = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for position in ([issued["p"][0], "a\x00"], [2**70, issued["p"][1]]):
        raw = json.dumps({"p": position, "q": issued["q"]}).encode()
        forged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await api.artifacts.ListArtifacts(
                asv.ListArtifactsRequest(parent=TENANT, page_size=1, page_token=forged)
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(e.value) == ["page_token"]


# --- paging ----------------------------------------------------------------------------------


async def test_pages_split_runs_created_in_the_same_microsecond(
    engine: AsyncEngine, store: Store
) -> None:
    ids = sorted([await new_run(store, f"run-{i:02d}") for i in range(7)], reverse=True)
    async with engine.begin() as conn:
        await conn.execute(update(runs).values(create_us=1_700_000_000_000_000))
    seen: list[str] = []
    after: tuple[int, str] | None = None
    while page := await store.runs.list_runs("acme", after=after, limit=3):
        seen += [r.id for r in page]
        after = (page[-1].create_us, page[-1].id)
    assert seen == ids
