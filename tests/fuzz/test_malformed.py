"""Malformed request messages on the real control plane: authentication comes before
decoding (without a token: UNAUTHENTICATED), a malformed message is INVALID_ARGUMENT with
ErrorInfo, also in the middle of a stream, every such call is audited, and a flood of them
writes a few log lines, never a traceback."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control.app import ControlApp
from flnet.server.decoding import LOG_INTERVAL
from tests.conftest import TENANT, Clients, clients_for
from tests.control.hand_engine import HandEngine, dev_run
from tests.fuzz.conftest import NOOP, Lines
from tests.fuzz.targets import Raw, stream_of
from tests.identity import IDENTITY

GARBAGE = b"\xff\xff\xff\xff"  # the four bytes of the issue
GET_RUN = "/flnet.api.control.v1.RunService/GetRun"
UPLOAD_INPUT = "/flnet.api.control.v1.ArtifactService/UploadInput"
FLOOD = 1000
# A flood's log: a line per method per LOG_INTERVAL (the test lasts less), a line's length.
MAX_FLOOD_LOG_BYTES = 4 * 300


def bearer(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    raw = dict(err.trailing_metadata() or ())["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status_pb2.Status.FromString(raw).details)
    return info


async def send(
    channel: grpc.aio.Channel, method: str, frames: list[bytes], token: str | None
) -> grpc.aio.AioRpcError:
    """The error `frames` (raw bytes) end a call of `method` with."""
    raw = Raw(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        if method == UPLOAD_INPUT:
            await raw.stream_unary(method)(stream_of(frames), metadata=bearer(token))
        else:
            await raw.unary_unary(method)(frames[0], metadata=bearer(token))
    return raised.value


@pytest.mark.parametrize("method", [GET_RUN, UPLOAD_INPUT], ids=["unary", "client stream"])
async def test_a_flood_of_garbage_is_refused_audited_and_barely_logged(
    server_logs: Lines, control: ControlApp, method: str
) -> None:
    """1,000 four-byte frames without a token, then 1,000 with one: UNAUTHENTICATED, then
    INVALID_ARGUMENT naming the message type, each call audited; the log gets a line or
    two (it got a traceback per call: 727 KB)."""
    token = IDENTITY.token(subject="mallet")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{control.port}") as channel:
        for who in (None, token):
            errors = [await send(channel, method, [GARBAGE], who) for _ in range(FLOOD)]
            codes = Counter(e.code() for e in errors)
            if who is None:
                assert codes == {grpc.StatusCode.UNAUTHENTICATED: FLOOD}
            else:
                assert codes == {grpc.StatusCode.INVALID_ARGUMENT: FLOOD}
                kind = "GetRunRequest" if method == GET_RUN else "UploadInputRequest"
                assert errors[0].details() == (
                    f"the request is not a valid flnet.api.control.v1.{kind} message"
                )
                info = error_info(errors[0])
                assert (info.domain, info.reason) == ("flnet.control", "INVALID_ARGUMENT")
    await control.audit.flush()
    refused = await control.audit.list("", limit=2 * FLOOD)
    assert Counter((r.method, r.code, r.reason) for r in refused) == {
        (method, "UNAUTHENTICATED", "TOKEN_MISSING"): FLOOD
    }
    malformed = await control.audit.list("default", limit=2 * FLOOD)
    assert Counter((r.method, r.subject, r.code) for r in malformed) == {
        (method, "mallet", "INVALID_ARGUMENT"): FLOOD
    }
    assert server_logs.faults() == []
    lines = [line for line in server_logs.text if "malformed" in line]
    assert len(lines) == 1 and method in lines[0]  # the rest within LOG_INTERVAL: counted
    assert LOG_INTERVAL >= 10
    assert server_logs.size < MAX_FLOOD_LOG_BYTES + 4096, server_logs.text  # + the start


async def test_a_malformed_message_in_the_middle_of_an_upload(
    server_logs: Lines, control: ControlApp, api: Clients
) -> None:
    metadata = asv.UploadInputRequest(
        metadata=asv.UploadMetadata(parent=TENANT, filename="a.csv", sha256="0" * 64)
    ).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{control.port}") as channel:
        error = await send(channel, UPLOAD_INPUT, [metadata, GARBAGE], IDENTITY.token())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UploadInputRequest" in (error.details() or "")
    assert server_logs.faults() == []
    [line] = [line for line in server_logs.text if "malformed" in line]
    assert f"{UPLOAD_INPUT} (message 1 of the stream)" in line


async def test_a_malformed_message_ends_an_engine_session_with_invalid_argument(
    server_logs: Lines, control: ControlApp, api: Clients
) -> None:
    """The session reads the engine's messages in a task of its own: a malformed one ends
    the stream with INVALID_ARGUMENT (it ended OK, with a traceback in the log)."""
    version = await api.register(NOOP)
    run, credential = await dev_run(api, version.name, await api.upload(b"a\n1\n"))
    hello = rt.ConnectRequest(hello=rt.Hello(run=run.name, engine_version="test"))
    sent_garbage = False

    async def requests() -> AsyncIterator[bytes]:
        nonlocal sent_garbage
        yield hello.SerializeToString()
        yield rt.ConnectRequest(heartbeat=rt.Heartbeat()).SerializeToString()
        sent_garbage = True
        yield GARBAGE

    engine = clients_for(f"127.0.0.1:{control.port}", credential)
    call = Raw(engine.channel).stream_stream("/flnet.api.runtime.v1.RuntimeService/Connect")(
        requests()
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for message in call:
            received.append(rt.ConnectResponse.FromString(message))
    await engine.channel.close()
    assert sent_garbage and received[0].HasField("welcome")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ConnectRequest" in (raised.value.details() or "")
    assert server_logs.faults() == []
    # The session is over, not the run: the engine reconnects as after any broken stream.
    again = HandEngine(api, run.name, credential)
    assert (await again.connect()).spec.run == run.name
    await again.close()
