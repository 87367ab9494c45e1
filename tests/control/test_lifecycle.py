"""The run lifecycle as the control plane records it: legal and illegal transitions, terminal
states, outputs, exactly-once batches, leases and cancellation — driven over the real
RuntimeService protocol."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control import names
from flnet.control.app import ControlApp
from flnet.control.services.runtime_service import RuntimeService
from tests.conftest import FIXTURES, Clients
from tests.control.hand_engine import HandEngine, connected_engine, dev_run, log, transition
from tests.status import reason

S = lc.RunState
NOOP = FIXTURES / "tools" / "noop"
PATH: list[int] = [
    S.RUN_STATE_PENDING,
    S.RUN_STATE_INITIALIZED,
    S.RUN_STATE_STARTED,
    S.RUN_STATE_RUNNING,
]
ALL: list[int] = [*PATH, S.RUN_STATE_FINISHED, S.RUN_STATE_ERROR, S.RUN_STATE_CANCELLED]


async def state_of(api: Clients, run: str) -> int:
    return (await api.runs.GetRun(rs.GetRunRequest(name=run))).run.state


async def upload_output(
    api: Clients, engine: HandEngine, name: str, data: bytes, sha: str | None = None
) -> rt.UploadOutputResponse:
    async def messages() -> AsyncIterator[rt.UploadOutputRequest]:
        yield rt.UploadOutputRequest(
            metadata=rt.OutputMetadata(
                run=engine.run,
                name=name,
                sha256=sha or hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
            )
        )
        yield rt.UploadOutputRequest(chunk=data)

    return await api.runtime.UploadOutput(messages(), metadata=engine.metadata)


async def drive_to(engine: HandEngine, target: int) -> None:
    for state in PATH[1 : PATH.index(target) + 1]:
        ack = await engine.propose(lc.RunState.ValueType(state))
        assert not ack.rejections and ack.state == state


async def test_happy_path_records_every_transition(api: Clients) -> None:
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, S.RUN_STATE_RUNNING)
    out = await upload_output(api, engine, "result", b'{"ok": true}')
    assert out.sha256 == hashlib.sha256(b'{"ok": true}').hexdigest()
    ack = await engine.propose(S.RUN_STATE_FINISHED)
    assert ack.state == S.RUN_STATE_FINISHED
    close = await engine.receive_kind("close")
    assert close.close.state == S.RUN_STATE_FINISHED
    run = (await api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run
    assert run.state == S.RUN_STATE_FINISHED
    assert [o.output_name for o in run.outputs] == ["result"]
    assert run.outputs[0].sha256 == out.sha256
    assert run.start_time.seconds and run.end_time.seconds
    events = (await api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=engine.run))).events
    changes = [
        (e.state_change.from_state, e.state_change.to_state)
        for e in events
        if e.HasField("state_change")
    ]
    assert changes == [
        (S.RUN_STATE_UNSPECIFIED, S.RUN_STATE_PENDING),
        *zip(PATH, [*PATH[1:], S.RUN_STATE_FINISHED], strict=True),
    ]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    await engine.close()


@pytest.mark.parametrize(
    ("start", "target"),
    [(a, b) for a, b in itertools.product(PATH, ALL) if not lifecycle.is_legal(a, b)],
    ids=lifecycle.state_name,
)
async def test_illegal_transitions_are_rejected(api: Clients, start: int, target: int) -> None:
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, start)
    ack = await engine.propose(lc.RunState.ValueType(target))
    assert len(ack.rejections) == 1 and "illegal" in ack.rejections[0].reason
    assert ack.state == start
    assert await state_of(api, engine.run) == start
    await engine.close()


@pytest.mark.parametrize("start", PATH[1:], ids=lifecycle.state_name)
@pytest.mark.parametrize(
    "target", [S.RUN_STATE_ERROR, S.RUN_STATE_CANCELLED], ids=lifecycle.state_name
)
async def test_any_nonterminal_state_may_end_in_error_or_cancelled(
    api: Clients, start: int, target: int
) -> None:
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, start)
    error = lifecycle.make_error(lc.ERROR_REASON_TOOL_EXCEPTION, "boom", traceback="Traceback…")
    ack = await engine.propose(
        lc.RunState.ValueType(target), error if target == S.RUN_STATE_ERROR else None
    )
    assert ack.state == target and not ack.rejections
    run = (await api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run
    assert run.state == target
    if target == S.RUN_STATE_ERROR:
        assert run.error.reason == lc.ERROR_REASON_TOOL_EXCEPTION
        assert run.error.kind == lc.ERROR_KIND_TOOL
        assert run.error.phase == start
        assert run.error.traceback == "Traceback…"
    await engine.close()


@pytest.mark.parametrize(
    "terminal", [S.RUN_STATE_FINISHED, S.RUN_STATE_ERROR, S.RUN_STATE_CANCELLED]
)
async def test_terminal_states_are_never_overwritten(api: Clients, terminal: int) -> None:
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, S.RUN_STATE_RUNNING)
    if terminal == S.RUN_STATE_FINISHED:
        await upload_output(api, engine, "result", b"{}")
    await engine.propose(lc.RunState.ValueType(terminal))
    await engine.close()
    # A second engine session with the same credential is told the run is over, and no
    # more: neither the run's spec nor its configuration ...
    again = HandEngine(api, engine.run, engine.credential)
    first = await again.open()
    assert first.WhichOneof("message") == "close", first
    assert first.close.state == terminal
    assert await again.rest() == []  # the stream ends after the Close
    await again.close()
    # ... and the control plane's own decisions cannot change it either.
    cancelled = await api.runs.CancelRun(rs.CancelRunRequest(name=engine.run, reason="late"))
    assert cancelled.run.state == terminal
    assert not cancelled.run.HasField("cancellation")


async def test_finished_without_required_output_is_an_error(api: Clients) -> None:
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, S.RUN_STATE_RUNNING)
    ack = await engine.propose(S.RUN_STATE_FINISHED)
    assert ack.state == S.RUN_STATE_ERROR
    run = (await api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run
    assert run.error.reason == lc.ERROR_REASON_OUTPUT_MISSING
    assert "result" in run.error.message
    await engine.close()


async def test_batches_are_stored_exactly_once(api: Clients) -> None:
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, S.RUN_STATE_RUNNING)  # batches 1..3
    ack = await engine.send_batch(log("a"), log("b"))
    assert ack.sequence == 4
    # A resend after a reconnect: acknowledged again, not stored again.
    dup = await engine.send_batch(log("a"), log("b"), sequence=4)
    assert dup.sequence == 4
    # A gap is not stored: the engine must resend in order.
    gap = await engine.send_batch(log("z"), sequence=9)
    assert gap.sequence == 4
    events = (await api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=engine.run))).events
    assert [e.log.message for e in events if e.HasField("log")] == ["a", "b"]
    await engine.close()


async def test_dropped_channel_is_never_success(api: Clients) -> None:
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, S.RUN_STATE_RUNNING)
    await engine.close()  # the stream ends without a FINISHED
    await asyncio.sleep(1.0)
    assert await state_of(api, engine.run) == S.RUN_STATE_RUNNING
    # Silent past the lease (5 s in these tests): the run is LOST, never FINISHED.
    for _ in range(100):
        if await state_of(api, engine.run) != S.RUN_STATE_RUNNING:
            break
        await asyncio.sleep(0.2)
    run = (await api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run
    assert run.state == S.RUN_STATE_ERROR
    assert run.error.reason == lc.ERROR_REASON_LOST
    assert run.error.retry_safe


async def test_reconnect_resumes_where_the_store_is(api: Clients) -> None:
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, S.RUN_STATE_STARTED)
    await engine.close()
    again = HandEngine(api, engine.run, engine.credential)
    welcome = await again.connect()
    assert welcome.state == S.RUN_STATE_STARTED
    assert welcome.acked_sequence == 2
    again.sequence = welcome.acked_sequence
    ack = await again.propose(S.RUN_STATE_RUNNING)
    assert ack.sequence == 3 and ack.state == S.RUN_STATE_RUNNING
    await again.close()


@pytest.mark.parametrize("start", PATH[1:], ids=lifecycle.state_name)
async def test_cancel_with_a_cooperative_engine(api: Clients, start: int) -> None:
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, start)
    res = await api.runs.CancelRun(rs.CancelRunRequest(name=engine.run, reason="not needed"))
    assert res.run.cancellation.reason == "not needed"
    assert res.run.cancellation.requested_by
    command = (await engine.receive_kind("command")).command
    assert command.cancel.reason == "not needed"
    # The tool's grace (2 s), counted from the request's recording.
    assert 1.5 < command.cancel.grace_period.ToNanoseconds() / 1e9 <= 2.0
    ack = await engine.propose(S.RUN_STATE_CANCELLED)
    assert ack.state == S.RUN_STATE_CANCELLED
    run = (await api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run
    assert run.state == S.RUN_STATE_CANCELLED
    assert run.cancellation.HasField("complete_time")
    assert run.cancellation.HasField("teardown")
    await engine.close()


async def test_a_cancel_recorded_while_the_engine_connects_reaches_it(
    api: Clients, control: ControlApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel is recorded after Connect read the run and before its session opened:
    nothing was connected to tell then, and the run Connect read knows of no cancel."""
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, S.RUN_STATE_RUNNING)
    await engine.close()
    tenant, run_id = names.parse_run(engine.run)
    async with asyncio.timeout(5):
        while control.runs.context.sessions.get(run_id) is not None:  # noqa: ASYNC110 - it ends
            await asyncio.sleep(0.01)
    authorize = RuntimeService._authorize

    async def cancelled_meanwhile(self: RuntimeService, *args: Any, **kw: Any) -> Any:
        row = await authorize(self, *args, **kw)
        await control.runs.cancel(tenant, run_id, "meanwhile", "someone")
        return row

    monkeypatch.setattr(RuntimeService, "_authorize", cancelled_meanwhile)
    again = HandEngine(api, engine.run, engine.credential)
    welcome = await again.connect()
    assert welcome.state == S.RUN_STATE_RUNNING
    command = (await again.receive_kind("command", wait=1.5)).command
    assert command.cancel.reason == "meanwhile"
    await again.close()


async def test_cancel_of_an_engine_that_ignores_it_ends_after_the_grace(api: Clients) -> None:
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, S.RUN_STATE_RUNNING)
    await api.runs.CancelRun(rs.CancelRunRequest(name=engine.run, reason="stop"))
    for _ in range(100):
        if await state_of(api, engine.run) == S.RUN_STATE_CANCELLED:
            break
        await asyncio.sleep(0.2)
    run = (await api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run
    assert run.state == S.RUN_STATE_CANCELLED
    assert run.cancellation.teardown.seconds >= 2  # the grace period was honoured
    await engine.close()


async def test_cancel_while_pending_is_immediate(api: Clients) -> None:
    version = await api.register(NOOP)
    artifact = await api.upload(b"x\n1\n")
    run, _ = await dev_run(api, version.name, artifact)
    res = await api.runs.CancelRun(rs.CancelRunRequest(name=run.name))
    assert res.run.state == S.RUN_STATE_CANCELLED


async def test_upload_output_errors(api: Clients) -> None:
    engine = await connected_engine(api, NOOP)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await upload_output(api, engine, "result", b"{}")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # not RUNNING yet
    await drive_to(engine, S.RUN_STATE_RUNNING)
    cases = [
        ("undeclared", None, grpc.StatusCode.INVALID_ARGUMENT, "OUTPUT_UNDECLARED"),
        ("../../etc/passwd", None, grpc.StatusCode.INVALID_ARGUMENT, "OUTPUT_NAME_INVALID"),
        ("result", "0" * 64, grpc.StatusCode.INVALID_ARGUMENT, "CHECKSUM_MISMATCH"),
    ]
    for name, sha, code, why in cases:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await upload_output(api, engine, name, b"{}", sha)
        assert (e.value.code(), reason(e.value)) == (code, why), name
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await upload_output(api, engine, "result", b"x" * (1024 * 1024 + 1))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    run = (await api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run
    assert not run.outputs  # nothing partial became visible
    await engine.close()


async def test_an_output_another_run_reads_cannot_be_replaced(api: Clients) -> None:
    """An engine uploading an output again replaces it, unless a later run already took it as
    an input: that run's reference must not dangle."""
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, S.RUN_STATE_RUNNING)
    first = await upload_output(api, engine, "result", b'{"v": 1}')
    replaced = await upload_output(api, engine, "result", b'{"v": 2}')
    assert replaced.sha256 != first.sha256
    version = await api.register(NOOP)
    reader, _ = await dev_run(api, version.name, replaced.artifact)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await upload_output(api, engine, "result", b'{"v": 3}')
    assert (e.value.code(), reason(e.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "OUTPUT_IN_USE",
    )
    run = (await api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run
    assert [(o.name, o.sha256) for o in run.outputs] == [(replaced.artifact, replaced.sha256)]
    assert reader.inputs[0].artifact == replaced.artifact
    await engine.close()


async def test_credentials_speak_for_their_own_run_only(api: Clients) -> None:
    a = await connected_engine(api, NOOP)
    b = await connected_engine(api, NOOP)
    impostor = HandEngine(api, b.run, a.credential)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await impostor.connect()
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    nobody = HandEngine(api, a.run, "flr_not-a-credential")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await nobody.connect()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await a.close()
    await b.close()


async def test_stream_must_open_with_hello(api: Clients) -> None:
    version = await api.register(NOOP)
    run, credential = await dev_run(api, version.name, await api.upload(b"a\n1\n"))

    async def requests() -> AsyncIterator[rt.ConnectRequest]:
        yield rt.ConnectRequest(heartbeat=rt.Heartbeat())

    call = api.runtime.Connect(requests(), metadata=HandEngine(api, run.name, credential).metadata)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in call:
            pass
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_telemetry_after_transition_is_ordered(api: Clients) -> None:
    engine = await connected_engine(api, NOOP)
    await engine.send_batch(log("one"), transition(S.RUN_STATE_INITIALIZED), log("two"))
    events = (await api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=engine.run))).events
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["state_change", "log", "state_change", "log"]
    await engine.close()


async def test_an_engine_cannot_forge_history(api: Clients) -> None:
    """Entry's reserved field numbers are RunEvent's state_change, output, ... : raw bytes
    under them, and empty entries, must neither reach the history nor shift its numbering."""
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, S.RUN_STATE_RUNNING)
    forged = lc.StateChange(to_state=S.RUN_STATE_FINISHED, actor="control").SerializeToString()
    field_3 = b"\x1a" + bytes([len(forged)]) + forged  # tag of RunEvent.state_change
    smuggled = rt.Entry.FromString(log("real").SerializeToString() + field_3)
    ack = await engine.send_batch(log("before"), rt.Entry(), smuggled, log("after"))
    assert ack.state == S.RUN_STATE_RUNNING
    events = (await api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=engine.run))).events
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.log.message for e in events if e.HasField("log")] == ["before", "real", "after"]
    assert [e.state_change.to_state for e in events if e.HasField("state_change")][-1] == (
        S.RUN_STATE_RUNNING
    )
    await engine.close()


async def test_the_fault_follows_from_the_reason_not_from_the_engine(api: Clients) -> None:
    engine = await connected_engine(api, NOOP)
    await drive_to(engine, S.RUN_STATE_RUNNING)
    claimed = lc.RunError(
        reason=lc.ERROR_REASON_TOOL_EXCEPTION,
        kind=lc.ERROR_KIND_PLATFORM,
        retry_safe=True,
        message="my bug, blamed on you",
    )
    await engine.propose(S.RUN_STATE_ERROR, claimed)
    run = (await api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run
    assert (run.error.kind, run.error.retry_safe) == (lc.ERROR_KIND_TOOL, False)
    await engine.close()


async def test_run_credentials_are_short_lived_jwts_of_their_run(api: Clients) -> None:
    engine = await connected_engine(api, NOOP)
    claims = jwt.decode(engine.credential, options={"verify_signature": False})
    assert claims["aud"] == "flnet-runtime" and claims["scope"] == "runtime"
    assert claims["run_id"] == engine.run
    assert claims["exp"] - claims["iat"] <= 20 * 3600  # the tool's deadline plus an hour
    # The same claims signed by anyone but the control plane are worth nothing.
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, other, algorithm="ES256", headers={"kid": "x"})
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await HandEngine(api, engine.run, forged).connect()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await engine.close()
