""" "Never a dangling reference": gc deleting an input while a control plane (another engine on
the same database, as another process would be) references it or uploads its content again.
Each race is forced: one side's transaction is held open at the decisive point while the
other side runs into it and waits, on PostgreSQL for a row lock, on SQLite for the database's
write lock."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.control.app import ControlApp
from flnet.control.clock import now_us
from flnet.control.database import create_engine, migrate
from flnet.control.news import RunFeed
from flnet.control.schema import artifacts, run_inputs
from flnet.control.store import Store
from flnet.control.store.artifacts import _uploaded_again
from flnet.control.store.retention import delete_stale_input
from flnet.errors import NotFound
from flnet.structs import dict_to_struct
from tests.conftest import TENANT, Clients
from tests.postgres import database_url
from tests.retention.support import DAY_US, NOOP, Gc, gc_of, upload

T = TypeVar("T")
WEEK_AGO = -7 * DAY_US
HELD = 0.3  # how long the other side is shown to wait


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """The control plane's store and gc's, each on an engine of its own."""
    url = database_url(tmp_path)
    engines = [create_engine(url), create_engine(url)]
    await migrate(engines[0])
    yield Store(engines[0], RunFeed()), Store(engines[1], RunFeed())
    for engine in engines:
        await engine.dispose()


async def add_input(store: Store, content: bytes) -> ap.Artifact:
    sha = hashlib.sha256(content).hexdigest()
    return await store.artifacts.add_input_artifact(
        artifact_id=uuid.uuid4().hex[:20],
        tenant="acme",
        sha256=sha,
        size=len(content),
        media_type="text/plain",
        filename="in.txt",
        uri=f"file:///nowhere/{sha}",
    )


async def old_input(store: Store, content: bytes) -> ap.Artifact:
    """An input last uploaded a week ago."""
    artifact = await add_input(store, content)
    async with store.db.engine.begin() as conn:
        await conn.execute(
            artifacts.update()
            .where(artifacts.c.id == artifact.name.rsplit("/", 1)[1])
            .values(uploaded_us=now_us() + WEEK_AGO)
        )
    return artifact


async def new_run(store: Store, inputs: dict[str, ap.Artifact]) -> str:
    run_id = uuid.uuid4().hex[:20]
    bound = [rp.RunInput(name=n, artifact=a.name) for n, a in inputs.items()]
    await store.runs.create_run(
        run_id=run_id,
        tenant="acme",
        tool="noop",
        spec=rp.Run(tool_version="tenants/acme/tools/noop/versions/1.0.0", inputs=bound),
        request_sha256="0" * 64,
        credential_sha256=uuid.uuid4().hex * 2,
        deadline_us=None,
    )
    return run_id


async def waits(work: Awaitable[T]) -> asyncio.Task[T]:
    """Starts `work` and shows that it waits (for what the caller holds)."""
    task = asyncio.ensure_future(work)
    await asyncio.sleep(HELD)
    assert not task.done(), "expected to wait for the transaction held open"
    return task


def cutoff() -> int:
    """gc's with a grace period of a day."""
    return now_us() - DAY_US


def id_of(artifact: ap.Artifact) -> str:
    return artifact.name.rsplit("/", 1)[1]


async def test_an_upload_again_waiting_for_gc_records_its_content_anew(
    stores: tuple[Store, Store],
) -> None:
    control, gc = stores
    old = await old_input(control, b"content")
    async with gc.retention.gc_write() as conn:
        assert await delete_stale_input(conn, id_of(old), cutoff()) is not None
        again = await waits(add_input(control, b"content"))
    fresh = await again
    # Not the deleted artifact's name: the upload's caller holds one that exists.
    assert fresh.name != old.name
    assert (await control.artifacts.get_artifact("acme", id_of(fresh))).sha256 == old.sha256
    with pytest.raises(NotFound):
        await control.artifacts.get_artifact("acme", id_of(old))


async def test_gc_waiting_for_an_upload_again_spares_the_input(
    stores: tuple[Store, Store],
) -> None:
    control, gc = stores
    old = await old_input(control, b"content")
    async with control.db.write() as conn:
        assert await _uploaded_again(conn, id_of(old), now_us())
        deleting = await waits(gc.retention.delete_stale_input(id_of(old), cutoff()))
    assert await deleting is None
    assert await control.artifacts.get_artifact("acme", id_of(old)) == old


async def test_gc_waiting_for_a_run_that_references_the_input_spares_it(
    stores: tuple[Store, Store],
) -> None:
    """On PostgreSQL gc's NOT EXISTS saw the references as they were when its DELETE began:
    the foreign key, checked once the run committed, refuses the delete."""
    control, gc = stores
    data, extra = await old_input(control, b"data"), await old_input(control, b"extra")
    run_id = await new_run(control, {"data": data})
    async with control.db.write() as conn:
        await conn.execute(
            insert(run_inputs).values(run_id=run_id, name="extra", artifact_id=id_of(extra))
        )
        deleting = await waits(gc.retention.delete_stale_input(id_of(extra), cutoff()))
    assert await deleting is None
    assert await control.artifacts.get_artifact("acme", id_of(extra)) == extra


async def test_a_run_waiting_for_gc_to_delete_its_input_is_refused(
    stores: tuple[Store, Store],
) -> None:
    control, gc = stores
    data = await old_input(control, b"data")
    async with gc.retention.gc_write() as conn:
        assert await delete_stale_input(conn, id_of(data), cutoff()) is not None
        creating = await waits(new_run(control, {"data": data}))
    with pytest.raises(NotFound, match=f"artifact {data.name} does not exist"):
        await creating


async def test_the_database_refuses_to_delete_a_referenced_artifact(
    stores: tuple[Store, Store],
) -> None:
    control, gc = stores
    data = await old_input(control, b"data")
    await new_run(control, {"data": data})
    assert await gc.retention.stale_inputs(cutoff()) == []
    assert await gc.retention.delete_stale_input(id_of(data), cutoff()) is None
    with pytest.raises(IntegrityError):
        async with gc.db.engine.begin() as conn:
            await conn.execute(delete(artifacts).where(artifacts.c.id == id_of(data)))


async def test_create_run_after_gc_deleted_its_input_is_not_found(api: Clients, gc: Gc) -> None:
    """The same race through the API: CreateRun resolved the input before gc's delete
    committed, and its insert then fails on the foreign key."""
    version = await api.register(NOOP)
    data = (await upload(api, b"a,b\n1,2\n")).artifact
    later = now_us() + 2 * DAY_US
    request = rs.CreateRunRequest(
        parent=TENANT,
        run=rp.Run(
            tool_version=version.name,
            config=dict_to_struct({"rate": 1}),
            inputs=[rp.RunInput(name="data", artifact=data.name)],
            dev_session=True,
        ),
    )
    async with gc.store.retention.gc_write() as conn:
        assert await delete_stale_input(conn, id_of(data), later) is not None
        creating = await waits(api.runs.CreateRun(request))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await creating
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"artifact {data.name} does not exist" in (e.value.details() or "")


async def test_two_gcs_at_once_delete_each_input_once(
    control: ControlApp, api: Clients, gc: Gc
) -> None:
    names = [(await upload(api, f"input {i}\n".encode())).artifact.name for i in range(6)]
    async with gc_of(control.settings) as other:
        reports = await asyncio.gather(
            gc.collect(days_later=2, telemetry_age=None),
            other.collect(days_later=2, telemetry_age=None),
        )
    assert sum(r.inputs.count for r in reports) == len(names)
    assert sum(r.inputs.bytes for r in reports) == sum(len(f"input {i}\n") for i in range(6))
    assert [r.errors for r in reports] == [[], []]
