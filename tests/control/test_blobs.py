"""The artifact-store contract, on both stores: the local files and a real S3 (SeaweedFS).
Blobs are visible only once committed, read back whole or from any offset in chunks,
verified by sha256; aborted or interrupted writes leave nothing behind (no object, no
pending multipart upload); resumable uploads survive retries; a 1 GiB blob streams through
in bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flnet.channels import CHUNK_BYTES
from flnet.control.blobs import (
    Blob,
    BlobMissing,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    open_blob_store,
    open_s3_blob_store,
    verify,
)
from flnet.control.services.artifact_service import receive_blob
from flnet.control.settings import ControlSettings
from flnet.errors import InvalidArgument
from tests.rss import peak_rss_growth
from tests.s3 import overwrite_blob, stored_under
from tests.seaweedfs import S3Server

MiB = 1024 * 1024


@pytest.fixture(params=["file", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "file":
        yield LocalBlobStore(tmp_path / "artifacts")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    s3 = await open_s3_blob_store(server.bucket, server.new_prefix(), endpoint=server.endpoint)
    yield s3
    await s3.close()


async def leftovers(store: BlobStore) -> list[str]:
    """Everything the store holds: files, objects and pending multipart uploads."""
    if isinstance(store, LocalBlobStore):
        return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    assert isinstance(store, S3BlobStore)
    return await stored_under(store)


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


async def write(store: BlobStore, data: bytes, step: int = 700_001) -> Blob:
    writer = store.writer()
    for i in range(0, len(data), step):
        await writer.write(data[i : i + step])
    return await writer.commit()


async def read(store: BlobStore, blob: Blob, offset: int = 0) -> bytes:
    return b"".join([chunk async for chunk in store.read(blob, offset)])


async def test_write_commit_read_from_any_offset(store: BlobStore) -> None:
    data = payload(20 * MiB + 17)  # several parts on S3, the last a short one
    blob = await write(store, data)
    assert blob.sha256 == hashlib.sha256(data).hexdigest() and blob.size == len(data)
    assert await store.exists(blob)
    chunks = [len(c) async for c in store.read(blob)]
    assert all(n == CHUNK_BYTES for n in chunks[:-1]) and sum(chunks) == len(data)
    assert await read(store, blob) == data
    for offset in (1, 5 * MiB + 3, len(data) - 1, len(data)):
        assert await read(store, blob, offset) == data[offset:]
    assert await verify(store, blob)
    assert len(await leftovers(store)) == 1


@pytest.mark.parametrize("size", [0, 1, 3 * MiB])
async def test_small_blobs(store: BlobStore, size: int) -> None:
    data = payload(size)
    blob = await write(store, data)
    assert blob.sha256 == hashlib.sha256(data).hexdigest()
    assert await read(store, blob) == data
    assert await read(store, blob, size) == b""
    assert await verify(store, blob)


async def test_abort_leaves_nothing(store: BlobStore) -> None:
    writer = store.writer()
    for _ in range(4):  # parts on their way to S3 when the abort comes
        await writer.write(payload(5 * MiB))
    await writer.abort()
    await writer.abort()  # idempotent
    assert await leftovers(store) == []


async def test_interrupted_upload_leaves_nothing(store: BlobStore) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield payload(MiB)
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        await receive_blob(store.writer(), chunks(), 2**40, "")
    assert await leftovers(store) == []


async def test_cancelled_upload_leaves_nothing(store: BlobStore) -> None:
    arrived = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield payload(MiB)
        arrived.set()
        await asyncio.Event().wait()  # the client stalls, then disconnects
        yield b""

    task = asyncio.create_task(receive_blob(store.writer(), chunks(), 2**40, ""))
    await arrived.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await leftovers(store) == []


async def test_mismatched_upload_leaves_nothing(store: BlobStore) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield payload(MiB)

    with pytest.raises(InvalidArgument):
        await receive_blob(store.writer(), chunks(), 2**40, "0" * 64)
    assert await leftovers(store) == []


async def test_missing_and_corrupted_blobs(store: BlobStore) -> None:
    blob = await write(store, b"0123456789")
    gone = Blob(blob.uri.rsplit("/", 1)[0] + "/nope", "f" * 64, 10)
    assert not await store.exists(gone)
    with pytest.raises(BlobMissing):
        await read(store, gone)
    await overwrite_blob(store, blob.uri, b"0123456780")
    assert not await verify(store, blob)


async def test_discard(store: BlobStore) -> None:
    blob = await write(store, b"duplicate")
    await store.discard(blob)
    # S3 objects belong to one blob each; local content may be shared, so it stays.
    assert await store.exists(blob) == isinstance(store, LocalBlobStore)


async def test_resumable_upload_with_retries(store: BlobStore) -> None:
    data = payload(6 * MiB)
    await store.start_partial("u1")
    await store.append_partial("u1", 0, data[:MiB])
    # An attempt that failed before its progress was recorded, then its resend, shorter.
    await store.append_partial("u1", MiB, data[MiB : 4 * MiB])
    await store.append_partial("u1", MiB, data[MiB : 2 * MiB])
    await store.append_partial("u1", 2 * MiB, data[2 * MiB :])
    with pytest.raises(BlobMissing):
        await store.commit_partial("u1", len(data) + 1)
    blob = await store.commit_partial("u1", len(data))
    await store.drop_partial("u1")
    assert blob.size == len(data) and blob.sha256 == hashlib.sha256(data).hexdigest()
    assert await read(store, blob) == data
    assert len(await leftovers(store)) == 1  # the blob; no pieces


async def test_empty_resumable_upload(store: BlobStore) -> None:
    await store.start_partial("u2")
    blob = await store.commit_partial("u2", 0)
    await store.drop_partial("u2")
    assert blob.sha256 == hashlib.sha256(b"").hexdigest()
    assert await read(store, blob) == b""


async def test_partial_uploads_are_seen_by_every_replica(store: BlobStore) -> None:
    """A second store on the same bucket (another control-plane replica) finishes what the
    first one received."""
    if not isinstance(store, S3BlobStore):
        pytest.skip("replicas share an S3 bucket, not a local disk")
    endpoint = store.client.meta.endpoint_url
    other = await open_s3_blob_store(store.bucket, store.prefix, endpoint=endpoint)
    try:
        await store.append_partial("u3", 0, b"hello, ")
        await other.append_partial("u3", 7, b"world")
        blob = await other.commit_partial("u3", 12)
        assert await read(store, blob) == b"hello, world"
    finally:
        await other.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_gib_streams_through_in_bounded_memory(store: BlobStore) -> None:
    block = os.urandom(MiB)
    written = hashlib.sha256()
    with peak_rss_growth() as growth:
        writer = store.writer()
        for i in range(1024):  # 1 GiB, made on the fly: each MiB starts with its number
            chunk = i.to_bytes(8, "big") + block[8:]
            written.update(chunk)
            await writer.write(chunk)
        blob = await writer.commit()
        assert blob.sha256 == written.hexdigest() and blob.size == 1024 * MiB
        assert await verify(store, blob)
    assert growth[0] < 100 * 1000 * 1000, f"RSS grew by {growth[0] / MiB:.0f} MiB"


async def test_the_store_is_chosen_by_its_url(tmp_path: Path, s3_server: S3Server) -> None:
    local = await open_blob_store((tmp_path / "a b").as_uri())
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path / "a b"
    s3 = await open_blob_store(
        f"s3://{s3_server.bucket}/some/prefix/", s3_endpoint=s3_server.endpoint
    )
    try:
        assert isinstance(s3, S3BlobStore)
        assert (s3.bucket, s3.prefix) == (s3_server.bucket, "some/prefix")
        assert (await s3.writer().commit()).uri.startswith(
            f"s3://{s3_server.bucket}/some/prefix/objects/"
        )
    finally:
        await s3.close()
    with pytest.raises(ValueError, match="FLNET_ARTIFACT_URL"):
        await open_blob_store("s3://no-such-bucket/x", s3_endpoint=s3_server.endpoint)
    with pytest.raises(ValueError, match="FLNET_ARTIFACT_URL"):
        await open_blob_store("ftp://example.com/artifacts")


def test_settings_read_the_artifact_store_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLNET_OIDC_ISSUER", "https://issuer.test.invalid")
    monkeypatch.setenv("FLNET_ARTIFACT_URL", "s3://bucket/prefix")
    monkeypatch.setenv("FLNET_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    settings = ControlSettings.from_env(data_dir=tmp_path)
    assert settings.resolved_artifact_url == "s3://bucket/prefix"
    assert (settings.s3_endpoint, settings.s3_region) == ("http://127.0.0.1:9", "eu-west-3")
    monkeypatch.delenv("FLNET_ARTIFACT_URL")
    default = ControlSettings.from_env(data_dir=tmp_path)
    assert default.resolved_artifact_url == (tmp_path / "artifacts").as_uri()
    monkeypatch.setenv("FLNET_ARTIFACT_URL", "/no/scheme")
    with pytest.raises(ValueError, match="FLNET_ARTIFACT_URL"):
        ControlSettings.from_env(data_dir=tmp_path)
