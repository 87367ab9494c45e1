"""gc's error paths: what it refuses to start on, and how a store that fails midway leaves
nothing dangling and only what the next pass collects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.cli.stack import free_port
from flnet.control.blobs import Blob, BlobStore, LocalBlobStore
from flnet.control.blobs.protocol import Stored
from flnet.control.database import create_engine, head_revision, migrate
from flnet.control.retention import Policy, run_gc
from flnet.control.settings import default_artifact_url
from tests.conftest import TENANT, Clients
from tests.postgres import database_url
from tests.retention.support import Gc, download, upload
from tests.retention.test_gc import missing
from tests.s3 import storage_uri


class Failing:
    """The artifact store, with some operations failing the way an unreachable S3 fails."""

    def __init__(self, store: BlobStore, *failing: str) -> None:
        self._store = store
        self._failing = set(failing)

    def __getattr__(self, name: str) -> Any:
        if name not in self._failing:
            return getattr(self._store, name)
        if name.startswith("list_"):
            return self._broken_listing
        return self._broken

    async def _broken(self, *args: object, **kwargs: object) -> None:
        raise ConnectionError("the artifact store is unreachable")

    async def _broken_listing(self) -> AsyncIterator[Stored]:
        raise ConnectionError("the artifact store is unreachable")
        yield  # pragma: no cover - an async generator


def failing(gc: Gc, *operations: str) -> Gc:
    return Gc(gc.store, cast(BlobStore, Failing(gc.blobs, *operations)))


def test_a_policy_refuses_negative_durations() -> None:
    with pytest.raises(ValueError, match="grace period must not be negative"):
        Policy(grace=-1)
    with pytest.raises(ValueError, match="telemetry age must not be negative"):
        Policy(telemetry_age=-1)


async def test_run_gc_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    artifacts = default_artifact_url(tmp_path)
    with pytest.raises(ValueError, match="not a database URL this FLNet can use"):
        await run_gc("nosuchdb://x", artifacts, Policy())
    with pytest.raises(ValueError, match=r"no database at .*flnet db upgrade"):
        await run_gc(f"sqlite+aiosqlite:///{tmp_path / 'none.db'}", artifacts, Policy())
    assert not (tmp_path / "none.db").exists()  # not created on the way
    url = f"postgresql+asyncpg://flnet:secret-pw@127.0.0.1:{free_port()}/flnet"
    with pytest.raises(ValueError, match="cannot reach the database") as e:
        await run_gc(url, artifacts, Policy())
    assert "secret-pw" not in str(e.value)

    for directory in ("old", "current"):
        (tmp_path / directory).mkdir()
    old = database_url(tmp_path / "old", migrated=False)
    engine = create_engine(old)
    try:
        await migrate(engine, "0004")
    finally:
        await engine.dispose()
    needs = f"at revision 0004, this version of FLNet needs {head_revision()}"
    with pytest.raises(ValueError, match=needs):
        await run_gc(old, artifacts, Policy())

    current = database_url(tmp_path / "current")
    engine = create_engine(current)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    with pytest.raises(ValueError, match="FLNET_ARTIFACT_URL"):
        await run_gc(current, "ftp://example.org/x", Policy())
    (tmp_path / "taken").write_text("a file where the store's directory would be")
    with pytest.raises(ValueError, match="FLNET_ARTIFACT_URL"):
        await run_gc(current, (tmp_path / "taken").as_uri(), Policy())
    report = await run_gc(current, artifacts, Policy())
    assert report.errors == [] and report.inputs.count == 0


async def test_bytes_that_could_not_be_removed_are_found_next_time(api: Clients, gc: Gc) -> None:
    unused = (await upload(api, b"never used\n")).artifact
    uri = await storage_uri(gc.store, unused.name)

    report = await failing(gc, "remove_blob").collect(days_later=2)

    # The record went first; its bytes stay, pointed to by nothing.
    assert report.inputs.count == 1 and report.inputs.bytes == 0
    # (and the sweep of the blobs no artifact records fails on them too)
    assert [e.split(": ")[0] for e in report.errors] == [
        f"the bytes of {unused.name}",
        f"blob {uri}",
    ]
    await missing(download(api, unused.name))
    assert await gc.holds(uri, unused.sha256)
    report = await gc.collect(days_later=2)
    assert (report.orphan_blobs.count, report.orphan_blobs.bytes) == (1, unused.size_bytes)
    assert not await gc.holds(uri, unused.sha256)


async def test_a_listing_that_fails_stops_only_its_own_sweep(gc: Gc) -> None:
    await gc.blobs.writer().commit()  # an empty orphan blob
    await gc.blobs.append_partial("strayupload", 0, b"piece")

    report = await failing(gc, "list_blobs").collect(days_later=2)

    assert report.errors == [
        "listing every blob of the artifact store: the artifact store is unreachable"
    ]
    assert report.orphan_blobs.count == 0 and report.uploads.count == 1
    assert (await gc.collect(days_later=2)).orphan_blobs.count == 1


async def test_an_expired_upload_whose_bytes_stay_keeps_its_record(api: Clients, gc: Gc) -> None:
    started = (
        await api.artifacts.StartUpload(asv.StartUploadRequest(parent=TENANT, total_size=4))
    ).upload
    await api.artifacts.UploadChunk(asv.UploadChunkRequest(name=started.name, offset=0, data=b"ab"))
    upload_id = started.name.rsplit("/", 1)[1]

    report = await failing(gc, "drop_partial").collect(days_later=3)

    assert report.uploads.count == 0 and report.errors[0].startswith(f"upload {upload_id}:")
    assert [u.id for u in await gc.store.retention.expired_uploads(2**62)] == [upload_id]
    report = await gc.collect(days_later=3)
    assert (report.uploads.count, report.uploads.bytes) == (1, 2)
    assert await gc.store.retention.expired_uploads(2**62) == []


async def test_stores_refuse_what_they_did_not_list(gc: Gc) -> None:
    with pytest.raises(ValueError, match="not an unfinished write of this store"):
        await gc.blobs.drop_unfinished("../elsewhere")
    other = "s3://bucket/key" if isinstance(gc.blobs, LocalBlobStore) else "file:///a/blob"
    assert not await gc.blobs.remove_blob(Blob(other, "ab" * 32, 1), written_before_us=2**62)
