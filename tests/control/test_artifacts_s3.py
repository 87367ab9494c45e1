"""The control plane on S3 (a real SeaweedFS): what its bucket holds after uploads that
succeed, repeat, fail or are interrupted, and a 1 GiB artifact streamed through the
control plane in bounded memory. (`--artifacts s3` runs every control-plane test on S3.)"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.control.app import ControlApp
from flnet.control.blobs import S3BlobStore
from tests.conftest import TENANT, Clients, control_app, control_settings
from tests.control.test_artifacts import download
from tests.rss import peak_rss_growth
from tests.s3 import storage_uri, stored_under
from tests.status import reason

MiB = 1024 * 1024


@pytest.fixture
async def control(
    tmp_path: Path, s3_artifact_settings: dict[str, object]
) -> AsyncIterator[ControlApp]:
    app = control_app(control_settings(tmp_path, **s3_artifact_settings))
    await app.start("127.0.0.1:0")
    yield app
    await app.stop(0.5)


async def stored(control: ControlApp) -> list[str]:
    """The objects and pending multipart uploads under the control plane's prefix."""
    assert isinstance(control.blobs, S3BlobStore)
    return await stored_under(control.blobs)


async def eventually_empty(control: ControlApp) -> None:
    """The server learns of a client's disconnect a moment after the client gave up."""
    for _ in range(100):
        if not await stored(control):
            return
        await asyncio.sleep(0.05)
    assert await stored(control) == []


async def test_artifacts_are_objects_named_in_their_uri(api: Clients, control: ControlApp) -> None:
    payload = os.urandom(9 * MiB + 5)  # a multipart upload
    name = await api.upload(payload)
    assert await api.upload(payload) == name  # the duplicate's object is discarded
    listed = await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT))
    uri = await storage_uri(control.store, listed.artifacts[0].name)
    assert isinstance(control.blobs, S3BlobStore)
    assert uri.startswith(f"s3://{control.blobs.bucket}/{control.blobs.prefix}/objects/")
    assert await stored(control) == [uri.split("/", 3)[3]]
    assert await download(api, name) == payload
    assert await download(api, name, offset=8 * MiB + 1) == payload[8 * MiB + 1 :]


async def test_interrupted_upload_leaves_nothing(api: Clients, control: ControlApp) -> None:
    async def messages() -> AsyncIterator[asv.UploadInputRequest]:
        yield asv.UploadInputRequest(metadata=asv.UploadMetadata(parent=TENANT))
        for _ in range(20):
            yield asv.UploadInputRequest(chunk=os.urandom(MiB))
        raise ConnectionResetError("the client goes away mid-upload")

    with pytest.raises((grpc.aio.AioRpcError, ConnectionResetError, asyncio.CancelledError)):
        await api.artifacts.UploadInput(messages())
    await eventually_empty(control)


async def test_mismatched_upload_leaves_nothing(api: Clients, control: ControlApp) -> None:
    async def messages() -> AsyncIterator[asv.UploadInputRequest]:
        yield asv.UploadInputRequest(metadata=asv.UploadMetadata(parent=TENANT, sha256="a" * 64))
        for _ in range(12):
            yield asv.UploadInputRequest(chunk=os.urandom(MiB))

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.artifacts.UploadInput(messages())
    assert reason(e.value) == "CHECKSUM_MISMATCH"
    assert await stored(control) == []


async def test_resumable_upload_keeps_only_the_artifact(api: Clients, control: ControlApp) -> None:
    payload = os.urandom(3 * MiB + 1)
    upload = (
        await api.artifacts.StartUpload(
            asv.StartUploadRequest(parent=TENANT, total_size=len(payload))
        )
    ).upload
    for offset in range(0, len(payload), MiB):
        await api.artifacts.UploadChunk(
            asv.UploadChunkRequest(
                name=upload.name, offset=offset, data=payload[offset : offset + MiB]
            )
        )
    assert len(await stored(control)) == 4  # the pieces, visible to every replica
    artifact = (
        await api.artifacts.FinishUpload(asv.FinishUploadRequest(name=upload.name))
    ).artifact
    uri = await storage_uri(control.store, artifact.name)
    assert await stored(control) == [uri.split("/", 3)[3]]
    assert await download(api, artifact.name) == payload


async def test_resumable_upload_with_the_wrong_digest_leaves_nothing(
    api: Clients, control: ControlApp
) -> None:
    upload = (
        await api.artifacts.StartUpload(
            asv.StartUploadRequest(parent=TENANT, total_size=5, sha256="b" * 64)
        )
    ).upload
    await api.artifacts.UploadChunk(asv.UploadChunkRequest(name=upload.name, data=b"hello"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.artifacts.FinishUpload(asv.FinishUploadRequest(name=upload.name))
    assert reason(e.value) == "CHECKSUM_MISMATCH"
    assert await stored(control) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_gib_streams_through_the_control_plane(api: Clients, control: ControlApp) -> None:
    """Upload and verified download of 1 GiB made on the fly; client and control plane
    share this process, so its resident set bounds the control plane's."""
    block = os.urandom(MiB)
    sent = hashlib.sha256()

    async def messages() -> AsyncIterator[asv.UploadInputRequest]:
        yield asv.UploadInputRequest(metadata=asv.UploadMetadata(parent=TENANT))
        for i in range(1024):
            chunk = i.to_bytes(8, "big") + block[8:]
            sent.update(chunk)
            yield asv.UploadInputRequest(chunk=chunk)

    with peak_rss_growth() as growth:
        artifact = (await api.artifacts.UploadInput(messages())).artifact
        assert artifact.sha256 == sent.hexdigest()
        received = hashlib.sha256()
        async for msg in api.artifacts.DownloadArtifact(
            asv.DownloadArtifactRequest(name=artifact.name)
        ):
            received.update(msg.data)
        assert received.hexdigest() == sent.hexdigest()
    assert growth[0] < 100 * 1000 * 1000, f"RSS grew by {growth[0] / MiB:.0f} MiB"
