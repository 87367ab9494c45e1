"""Requests are decoded after authentication (flnet.server.decoding, installed by
flnet.server.serving.Server), for every cardinality: a malformed message is UNAUTHENTICATED
without a valid token, INVALID_ARGUMENT with one (ErrorInfo of the server's domain), audited
either way, and logged at most once per method per interval, without traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from tests.auth.conftest import DOMAIN, Stack
from tests.auth.issuer import bearer
from tests.auth.test_interceptor import RUN, error_info, runtime_token
from tests.fuzz.targets import Raw, stream_of

GARBAGE = b"\xff\xff\xff\xff"
GET_RUN = "/flnet.api.control.v1.RunService/GetRun"
WATCH_RUN = "/flnet.api.control.v1.RunService/WatchRun"
UPLOAD_INPUT = "/flnet.api.control.v1.ArtifactService/UploadInput"
CONNECT = "/flnet.api.runtime.v1.RuntimeService/Connect"
Metadata = tuple[tuple[str, str], ...] | None


async def call(stack: Stack, method: str, frames: list[bytes], metadata: Metadata) -> Any:
    """Sends raw `frames` to `method`, of its cardinality; its responses (raw bytes)."""
    raw = Raw(stack.channel)
    if method == GET_RUN:
        return await raw.unary_unary(method)(frames[0], metadata=metadata)
    if method == WATCH_RUN:
        return [r async for r in raw.unary_stream(method)(frames[0], metadata=metadata)]
    if method == UPLOAD_INPUT:
        return await raw.stream_unary(method)(stream_of(frames), metadata=metadata)
    return [r async for r in raw.stream_stream(method)(stream_of(frames), metadata=metadata)]


def token_for(stack: Stack, method: str) -> str:
    if method == CONNECT:
        return runtime_token(stack.issuer, sub="run:r1")
    return stack.issuer.token(scope="runs:read runs:write", tenant="beta", sub="bea")


CARDINALITIES = {
    "unary": GET_RUN,
    "server stream": WATCH_RUN,
    "client stream": UPLOAD_INPUT,
    "bidi stream": CONNECT,
}


@pytest.mark.parametrize("method", CARDINALITIES.values(), ids=CARDINALITIES.keys())
async def test_without_a_valid_token_garbage_is_unauthenticated(stack: Stack, method: str) -> None:
    """The credential is checked before the message is read (it was UNKNOWN or INTERNAL)."""
    for metadata, reason in ((None, "TOKEN_MISSING"), (bearer("not-a-jwt"), "TOKEN_MALFORMED")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(stack, method, [GARBAGE], metadata)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(raised.value).reason == reason
    assert [(r.method, r.subject, r.resource, r.code) for r in stack.records] == [
        (method, "", "", "UNAUTHENTICATED")
    ] * 2


@pytest.mark.parametrize("method", CARDINALITIES.values(), ids=CARDINALITIES.keys())
async def test_with_a_valid_token_garbage_is_invalid_argument(
    stack: Stack, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    token = token_for(stack, method)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(stack, method, [GARBAGE], bearer(token))
    err = raised.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    kind = {GET_RUN: "GetRunRequest", WATCH_RUN: "WatchRunRequest"}.get(method)
    kind = kind or ("UploadInputRequest" if method == UPLOAD_INPUT else "ConnectRequest")
    assert kind in (err.details() or "")
    info = error_info(err)
    assert (info.domain, info.reason) == (DOMAIN, "INVALID_ARGUMENT")
    [record] = stack.records
    assert (record.method, record.code, record.reason) == (
        method, "INVALID_ARGUMENT", "INVALID_ARGUMENT"
    )  # fmt: skip
    assert record.subject in ("bea", "run:r1")
    [line] = [r for r in caplog.records if r.name == "flnet.server.decoding"]
    assert line.levelno == logging.WARNING and not line.exc_info
    assert method in line.getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


STREAMS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "client stream": (
        UPLOAD_INPUT,
        lambda: asv.UploadInputRequest(chunk=b"x").SerializeToString(),
    ),
    "bidi stream": (
        CONNECT,
        lambda: rt.ConnectRequest(hello=rt.Hello(run=RUN)).SerializeToString(),
    ),
}


@pytest.mark.parametrize("case", STREAMS.values(), ids=STREAMS.keys())
async def test_each_message_of_a_stream_is_decoded_as_it_is_read(
    stack: Stack, case: tuple[str, Callable[[], bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    method, first = case
    responses = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        if method == UPLOAD_INPUT:
            frames = [first(), first(), GARBAGE, first()]
            await call(stack, method, frames, bearer(token_for(stack, method)))
        else:
            stream = Raw(stack.channel).stream_stream(method)(
                stream_of([first(), GARBAGE]), metadata=bearer(token_for(stack, method))
            )
            async for response in stream:
                responses.append(rt.ConnectResponse.FromString(response))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    if method == CONNECT:  # the well-formed first message was served
        assert [r.welcome.spec.run for r in responses] == [RUN]
    where = "message 2 of the stream" if method == UPLOAD_INPUT else "message 1 of the stream"
    [line] = [r.getMessage() for r in caplog.records if r.name == "flnet.server.decoding"]
    assert f"{method} ({where})" in line


async def test_a_refused_caller_is_audited_with_the_resource_it_named(stack: Stack) -> None:
    """Refusals do not decode the request; the audit record does, once the call is over
    (a malformed request names no resource)."""
    viewer = stack.issuer.token(scope="tools:read", tenant="beta", sub="bea")
    for frame in (rs.GetRunRequest(name=RUN).SerializeToString(), GARBAGE):
        for metadata in (None, bearer(viewer)):
            with pytest.raises(grpc.aio.AioRpcError):
                await call(stack, GET_RUN, [frame], metadata)
    assert [(r.subject, r.resource, r.code) for r in stack.records] == [
        ("", RUN, "UNAUTHENTICATED"),
        ("bea", RUN, "PERMISSION_DENIED"),
        ("", "", "UNAUTHENTICATED"),
        ("bea", "", "PERMISSION_DENIED"),
    ]


async def test_health_is_public_and_decodes_too(stack: Stack) -> None:
    check = Raw(stack.channel).unary_unary("/grpc.health.v1.Health/Check")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await check(GARBAGE)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ok = health_pb2.HealthCheckResponse.FromString(
        await check(health_pb2.HealthCheckRequest().SerializeToString())
    )
    assert ok.status == health_pb2.HealthCheckResponse.SERVING
    assert stack.records == []  # public: not audited


async def test_a_method_the_servicer_does_not_implement_is_unimplemented(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """grpc.health.v1.Health/List is in the proto, not in grpcio's servicer: UNIMPLEMENTED,
    as without interceptors (it was INTERNAL, with a traceback)."""
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await Raw(stack.channel).unary_unary("/grpc.health.v1.Health/List")(b"")
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
