"""ArtifactService: streamed and resumable uploads, verified streamed downloads."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import grpc
import pytest

from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.control.app import ControlApp
from tests.conftest import TENANT, Clients
from tests.s3 import overwrite_blob, storage_uri
from tests.status import reason, violations


async def download(api: Clients, name: str, offset: int = 0) -> bytes:
    data = b""
    async for msg in api.artifacts.DownloadArtifact(
        asv.DownloadArtifactRequest(name=name, offset=offset)
    ):
        assert msg.offset == offset + len(data)
        data += msg.data
    return data


async def test_upload_and_download_roundtrip_in_chunks(api: Clients) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    name = await api.upload(payload)
    assert await download(api, name) == payload
    assert await download(api, name, offset=1_000_000) == payload[1_000_000:]
    again = await api.upload(payload)
    assert again == name  # identical content in a tenant is one artifact


async def test_upload_checksum_mismatch_stores_nothing(api: Clients) -> None:
    async def messages() -> AsyncIterator[asv.UploadInputRequest]:
        yield asv.UploadInputRequest(metadata=asv.UploadMetadata(parent=TENANT, sha256="a" * 64))
        yield asv.UploadInputRequest(chunk=b"hello")

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.artifacts.UploadInput(messages())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(e.value) == "CHECKSUM_MISMATCH"
    listed = await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT))
    assert not listed.artifacts


async def test_upload_must_start_with_metadata(api: Clients) -> None:
    async def messages() -> AsyncIterator[asv.UploadInputRequest]:
        yield asv.UploadInputRequest(chunk=b"hello")

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.artifacts.UploadInput(messages())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == ["metadata"]


async def test_resumable_chunked_upload(api: Clients) -> None:
    payload = os.urandom(2_500_000)
    digest = hashlib.sha256(payload).hexdigest()
    upload = (
        await api.artifacts.StartUpload(
            asv.StartUploadRequest(
                parent=TENANT, filename="big.bin", total_size=len(payload), sha256=digest
            )
        )
    ).upload
    chunk = 1_000_000
    await api.artifacts.UploadChunk(
        asv.UploadChunkRequest(name=upload.name, offset=0, data=payload[:chunk])
    )
    # A retried chunk that was already committed changes nothing.
    again = await api.artifacts.UploadChunk(
        asv.UploadChunkRequest(name=upload.name, offset=0, data=payload[:chunk])
    )
    assert again.upload.committed_size == chunk
    with pytest.raises(grpc.aio.AioRpcError) as e:  # a gap
        await api.artifacts.UploadChunk(
            asv.UploadChunkRequest(name=upload.name, offset=2 * chunk, data=payload[2 * chunk :])
        )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.artifacts.FinishUpload(asv.FinishUploadRequest(name=upload.name))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Resume from what the server has.
    state = (await api.artifacts.GetUpload(asv.GetUploadRequest(name=upload.name))).upload
    offset = state.committed_size
    while offset < len(payload):
        await api.artifacts.UploadChunk(
            asv.UploadChunkRequest(
                name=upload.name, offset=offset, data=payload[offset : offset + chunk]
            )
        )
        offset += chunk
    with pytest.raises(grpc.aio.AioRpcError) as e:  # past the announced size
        await api.artifacts.UploadChunk(
            asv.UploadChunkRequest(name=upload.name, offset=len(payload), data=b"x")
        )
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    artifact = (
        await api.artifacts.FinishUpload(asv.FinishUploadRequest(name=upload.name))
    ).artifact
    assert artifact.sha256 == digest and artifact.size_bytes == len(payload)
    assert await download(api, artifact.name) == payload


async def test_download_errors(api: Clients, control: ControlApp) -> None:
    name = await api.upload(b"0123456789")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await download(api, name, offset=11)
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await download(api, f"{TENANT}/artifacts/nope")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    artifact = (
        await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT))
    ).artifacts[0]
    assert not artifact.storage_uri  # where the bytes are is the server's business
    await overwrite_blob(
        control.blobs, await storage_uri(control.store, artifact.name), b"0123456780"
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await download(api, name)
    assert e.value.code() == grpc.StatusCode.DATA_LOSS


async def test_list_artifacts_of_unknown_run_is_not_found(api: Clients) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=f"{TENANT}/runs/nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
