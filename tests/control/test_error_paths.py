"""Error paths not exercised elsewhere: each asserts its status code and what it says."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import grpc
import pytest

from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control.app import ControlApp
from flnet.structs import dict_to_struct
from tests.conftest import FIXTURES, TENANT, Clients
from tests.control.hand_engine import HandEngine, dev_run
from tests.s3 import overwrite_blob, storage_uri
from tests.status import drain, reason, violations

NOOP = FIXTURES / "tools" / "noop"
CSV = b"a,b\n1,2\n"


async def failure(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call  # type: ignore[misc]
    return e.value


async def test_dev_operations_need_a_connected_dev_session(api: Clients) -> None:
    version = await api.register(NOOP)
    artifact = await api.upload(CSV)
    plain = (
        await api.runs.CreateRun(
            rs.CreateRunRequest(
                parent=TENANT,
                run=rp.Run(
                    tool_version=version.name,
                    config=dict_to_struct({"rate": 1}),
                    inputs=[rp.RunInput(name="data", artifact=artifact)],
                ),
            )
        )
    ).run
    e = await failure(api.runs.UpdateDevConfig(rs.UpdateDevConfigRequest(name=plain.name)))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not a development session" in (e.details() or "")
    session, _ = await dev_run(api, version.name, artifact)  # created, never connected
    e = await failure(api.runs.StartDevTest(rs.StartDevTestRequest(name=session.name)))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is not connected" in (e.details() or "")


async def test_fetch_input(api: Clients) -> None:
    version = await api.register(NOOP)
    run, credential = await dev_run(api, version.name, await api.upload(CSV))
    engine = HandEngine(api, run.name, credential)

    async def fetch(name: str, offset: int = 0) -> bytes:
        data = b""
        async for msg in api.runtime.FetchInput(
            rt.FetchInputRequest(run=run.name, name=name, offset=offset),
            metadata=engine.metadata,
        ):
            data += msg.data
        return data

    assert await fetch("data") == CSV
    assert await fetch("data", offset=4) == CSV[4:]
    e = await failure(fetch("extra"))
    assert e.code() == grpc.StatusCode.NOT_FOUND and "no input 'extra'" in (e.details() or "")
    e = await failure(fetch("data", offset=len(CSV) + 1))
    assert e.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_upload_input_takes_metadata_once(api: Clients) -> None:
    async def messages() -> AsyncIterator[asv.UploadInputRequest]:
        yield asv.UploadInputRequest(metadata=asv.UploadMetadata(parent=TENANT))
        yield asv.UploadInputRequest(chunk=b"x")
        yield asv.UploadInputRequest(metadata=asv.UploadMetadata(parent=TENANT))

    e = await failure(api.artifacts.UploadInput(messages()))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e) == ["metadata"] and "only come first" in (e.details() or "")


async def test_chunked_upload_limits(api: Clients) -> None:
    e = await failure(
        api.artifacts.StartUpload(asv.StartUploadRequest(parent=TENANT, total_size=-1))
    )
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(e) == ["total_size"]
    e = await failure(
        api.artifacts.StartUpload(asv.StartUploadRequest(parent=TENANT, total_size=2**40))
    )
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and reason(e) == "TOO_LARGE"
    e = await failure(
        api.artifacts.StartUpload(asv.StartUploadRequest(parent=TENANT, sha256="nothex"))
    )
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(e) == ["sha256"]

    big = 6 * 1024 * 1024
    upload = (
        await api.artifacts.StartUpload(asv.StartUploadRequest(parent=TENANT, total_size=big))
    ).upload
    e = await failure(
        api.artifacts.UploadChunk(
            asv.UploadChunkRequest(name=upload.name, offset=0, data=b"z" * (5 * 1024 * 1024))
        )
    )
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(e) == ["data"]

    data = b"small"
    upload = (
        await api.artifacts.StartUpload(
            asv.StartUploadRequest(
                parent=TENANT, total_size=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
        )
    ).upload
    await api.artifacts.UploadChunk(asv.UploadChunkRequest(name=upload.name, data=data))
    await api.artifacts.FinishUpload(asv.FinishUploadRequest(name=upload.name))
    for call in (
        api.artifacts.FinishUpload(asv.FinishUploadRequest(name=upload.name)),
        api.artifacts.UploadChunk(asv.UploadChunkRequest(name=upload.name, data=data)),
    ):
        e = await failure(call)
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "already finished" in (e.details() or "")
    e = await failure(api.artifacts.GetUpload(asv.GetUploadRequest(name=f"{TENANT}/uploads/nope")))
    assert e.code() == grpc.StatusCode.NOT_FOUND


async def test_request_limits(api: Clients) -> None:
    e = await failure(api.runs.CreateRun(rs.CreateRunRequest(parent=TENANT, request_id="r" * 256)))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(e) == ["request_id"]
    e = await failure(api.runs.ListRuns(rs.ListRunsRequest(parent=TENANT, page_size=-1)))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(e) == ["page_size"]


async def test_export_of_corrupted_bytes_is_data_loss(api: Clients, control: ControlApp) -> None:
    version = await api.register(NOOP)
    name = await api.upload(CSV)
    run, _ = await dev_run(api, version.name, name)
    missing = f"{TENANT}/runs/nosuchrun"
    e = await failure(drain(api.runs.ExportRun(rs.ExportRunRequest(name=missing))))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    assert e.details() == f"run {missing} does not exist"
    uri = await storage_uri(control.store, name)
    await overwrite_blob(control.blobs, uri, CSV[:-1] + b"9")
    e = await failure(drain(api.runs.ExportRun(rs.ExportRunRequest(name=run.name))))
    assert e.code() == grpc.StatusCode.DATA_LOSS
    assert name in (e.details() or "")
