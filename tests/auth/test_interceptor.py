"""Issue 4 through a real server: every request authenticated and authorized, by the
declarations in proto/, for every cardinality; rejections are proper statuses with
ErrorInfo reasons and never echo the token."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.channels import insecure_channel
from flnet.server.auth.audit import AuditRecord
from flnet.server.interceptors import ErrorMapper
from flnet.server.serving import Server
from tests.auth.conftest import DOMAIN, SERVICE_NAMES, Stack
from tests.auth.issuer import Issuer, IssuerKey, bearer

RUN = "tenants/acme/runs/r1"
Metadata = tuple[tuple[str, str], ...]


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    raise AssertionError(f"no ErrorInfo on {err.code()}: {err.details()}")


async def get_run(stack: Stack, metadata: Metadata | None) -> str:
    response = await stack.runs.GetRun(rs.GetRunRequest(name=RUN), metadata=metadata)
    return response.run.creator


async def watch_run(stack: Stack, metadata: Metadata | None) -> str:
    subjects = [
        event.log.message
        async for response in stack.runs.WatchRun(rs.WatchRunRequest(name=RUN), metadata=metadata)
        for event in response.events
    ]
    assert len(subjects) == 3 and len(set(subjects)) == 1
    return subjects[0]


CALLS = {"unary GetRun": get_run, "server-streaming WatchRun": watch_run}


def _wrong_key(issuer: Issuer) -> str:
    impostor = IssuerKey.generate("RSA", kid=issuer.key.kid)  # same kid, other key
    return issuer.token(impostor)


# name -> (metadata for the issuer, expected reason)
UNAUTHENTICATED: dict[str, tuple[Callable[[Issuer], Metadata | None], str]] = {
    "missing token": (lambda i: None, "TOKEN_MISSING"),
    "empty bearer": (lambda i: (("authorization", "Bearer "),), "TOKEN_MALFORMED"),
    "other scheme": (lambda i: (("authorization", f"Basic {i.token()}"),), "TOKEN_MALFORMED"),
    "malformed token": (lambda i: bearer("not-a-jwt"), "TOKEN_MALFORMED"),
    "garbage segments": (lambda i: bearer("eyJhbGci.e30.c2ln"), "TOKEN_MALFORMED"),
    "alg none": (lambda i: bearer(i.unsigned_token()), "TOKEN_INVALID"),
    "HS256 signed with the public key": (
        lambda i: bearer(i.hs256_with_public_key()),
        "TOKEN_INVALID",
    ),
    "wrong key, same kid": (lambda i: bearer(_wrong_key(i)), "TOKEN_INVALID"),
    "wrong key, unknown kid": (
        lambda i: bearer(i.token(IssuerKey.generate("RSA"))),
        "TOKEN_INVALID",
    ),
    "wrong issuer": (lambda i: bearer(i.token(iss=i.url + "-other")), "TOKEN_ISSUER_INVALID"),
    "wrong audience": (lambda i: bearer(i.token(aud="another-api")), "TOKEN_AUDIENCE_INVALID"),
    "expired": (lambda i: bearer(i.token(exp=i.claims()["iat"] - 120)), "TOKEN_EXPIRED"),
    "not yet valid": (
        lambda i: bearer(i.token(nbf=i.claims()["iat"] + 120)),
        "TOKEN_NOT_YET_VALID",
    ),
    "issued in the future": (
        lambda i: bearer(i.token(iat=i.claims()["iat"] + 120, nbf=None)),
        "TOKEN_NOT_YET_VALID",
    ),
    "no expiry": (lambda i: bearer(i.token(exp=None)), "TOKEN_INVALID"),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
@pytest.mark.parametrize("case", UNAUTHENTICATED.values(), ids=UNAUTHENTICATED.keys())
async def test_bad_credentials_are_unauthenticated(
    stack: Stack,
    case: tuple[Callable[[Issuer], Metadata | None], str],
    call: Callable[[Stack, Metadata | None], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    make_metadata, expected = case
    metadata = make_metadata(stack.issuer)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(stack, metadata)
    err = raised.value
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
    info = error_info(err)
    assert (info.reason, info.domain) == (expected, DOMAIN)
    # The token is in no message, trailer or log line.
    for _, value in metadata or ():
        token = value.partition(" ")[2]
        if token:
            assert token not in (err.details() or "")
            assert token not in repr(err.trailing_metadata())
            assert token not in caplog.text
            for part in token.split("."):
                assert len(part) < 8 or part not in caplog.text


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_a_valid_token_reaches_the_handler_with_its_principal(
    stack: Stack, call: Callable[[Stack, Metadata | None], Any]
) -> None:
    assert await call(stack, bearer(stack.issuer.token(sub="alice"))) == "alice"
    # ES256 as well as RS256, and a clock skew within the leeway.
    es256 = stack.issuer.keys[1]
    now = stack.issuer.claims()["iat"]
    assert await call(stack, bearer(stack.issuer.token(es256, sub="bob", exp=now - 10))) == "bob"


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_a_valid_token_lacking_the_scope_is_permission_denied(
    stack: Stack, call: Callable[[Stack, Metadata | None], Any]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(stack, bearer(stack.issuer.token(scope="tools:read runs:write")))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(raised.value)
    assert info.reason == "SCOPE_MISSING"
    assert info.metadata["missing_scopes"] == "runs:read"


async def test_scopes_from_scp_roles_and_admin(stack: Stack) -> None:
    token = stack.issuer.token
    assert await get_run(stack, bearer(token(scope=None, scp=["runs:read"]))) == "alice"
    assert await get_run(stack, bearer(token(scope=None, roles=["viewer"]))) == "alice"
    keycloak = {"roles": ["operator", "offline_access"]}
    assert await get_run(stack, bearer(token(scope="openid", realm_access=keycloak))) == "alice"
    assert await get_run(stack, bearer(token(scope="openid admin"))) == "alice"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await get_run(stack, bearer(token(scope=None, roles=["unmapped"])))
    assert error_info(raised.value).reason == "SCOPE_MISSING"


async def test_a_token_without_tenant_is_permission_denied(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await get_run(stack, bearer(stack.issuer.token(tenant=None)))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(raised.value).reason == "TENANT_MISSING"


async def test_an_undeclared_method_is_denied_to_everyone(stack: Stack) -> None:
    admin = stack.issuer.token(scope="admin runs:read runs:write")
    for metadata in (None, bearer(admin)):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stack.undeclared()(b"ping", metadata=metadata)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(raised.value).reason == "METHOD_UNDECLARED"


async def test_health_and_reflection_need_no_token(stack: Stack) -> None:
    health: Any = health_pb2_grpc.HealthStub(stack.channel)
    reflection: Any = reflection_pb2_grpc.ServerReflectionStub(stack.channel)  # type: ignore[arg-type]
    for metadata in (None, bearer("not-a-jwt")):
        res = await health.Check(health_pb2.HealthCheckRequest(service=""), metadata=metadata)
        assert res.status == health_pb2.HealthCheckResponse.SERVING
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata
        )
        names = [s.name async for r in call for s in r.list_services_response.service]
        assert "flnet.api.control.v1.RunService" in names


async def test_each_stream_sees_its_own_principal(stack: Stack) -> None:
    subjects = [f"user-{n}" for n in range(8)]
    seen = await asyncio.gather(
        *(watch_run(stack, bearer(stack.issuer.token(sub=s))) for s in subjects)
    )
    assert seen == subjects


async def test_client_streaming_upload(stack: Stack) -> None:
    async def chunks() -> AsyncIterator[asv.UploadInputRequest]:
        for _ in range(3):
            yield asv.UploadInputRequest(chunk=b"x" * 10)

    token = stack.issuer.token(scope="runs:write", tenant="beta")
    res = await stack.artifacts.UploadInput(chunks(), metadata=bearer(token))
    assert (res.artifact.name, res.artifact.size_bytes) == ("tenants/beta/artifacts/a", 30)
    for metadata, code in (
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (bearer(stack.issuer.token()), grpc.StatusCode.PERMISSION_DENIED),  # runs:read only
    ):
        assert await refused(stack.artifacts.UploadInput(metadata=metadata)) == code


async def refused(call: Any) -> grpc.StatusCode:
    """The status of a request-streaming call that sends nothing: the rejection comes
    before the server reads any request. (A client that keeps writing after the server's
    status may see INTERNAL "Internal error from Core" instead: grpc/grpc#36066, a race in
    the grpc.aio client's write path, not a server behaviour.)"""
    code: grpc.StatusCode = await call.code()
    return code


def runtime_token(issuer: Issuer, **claims: Any) -> str:
    values: dict[str, Any] = {
        "aud": "flnet-runtime",
        "sub": "run:r1",
        "scope": "runtime",
        "tenant": None,
        "run_id": RUN,
        "client_id": None,
    }
    values.update(claims)
    return issuer.token(**values)


async def connect(stack: Stack, metadata: Metadata | None) -> list[rt.ConnectResponse]:
    async def messages() -> AsyncIterator[rt.ConnectRequest]:
        yield rt.ConnectRequest(hello=rt.Hello(run=RUN))
        for sequence in (1, 2):
            yield rt.ConnectRequest(batch=rt.Batch(sequence=sequence))

    return [r async for r in stack.runtime.Connect(messages(), metadata=metadata)]


async def test_bidi_runtime_session_audience(stack: Stack) -> None:
    responses = await connect(stack, bearer(runtime_token(stack.issuer)))
    assert responses[0].welcome.spec.run == RUN
    assert [r.ack.sequence for r in responses[1:]] == [1, 2]
    # A user token, even an admin's, does not open the runtime service, nor the reverse.
    admin = stack.issuer.token(scope="admin runtime")
    call = stack.runtime.Connect(metadata=bearer(admin))
    assert await refused(call) == grpc.StatusCode.UNAUTHENTICATED
    assert (await call.details()) == "token audience not accepted"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await get_run(stack, bearer(runtime_token(stack.issuer, scope="runtime runs:read")))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(raised.value).reason == "TOKEN_AUDIENCE_INVALID"
    for metadata, code in (
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (bearer(runtime_token(stack.issuer, scope="runs:read")), grpc.StatusCode.PERMISSION_DENIED),
    ):
        assert await refused(stack.runtime.Connect(metadata=metadata)) == code


async def test_rotated_keys_are_accepted_without_restart(stack: Stack) -> None:
    issuer = stack.issuer
    old_key = issuer.key
    assert await get_run(stack, bearer(issuer.token())) == "alice"
    assert issuer.jwks_fetches == 1
    stack.clock.advance(stack.keys.min_refresh_interval)
    new_key = issuer.rotate("EC")
    assert await watch_run(stack, bearer(issuer.token(new_key, sub="bob"))) == "bob"
    assert issuer.jwks_fetches == 2  # the unknown kid cost exactly one refetch
    assert await get_run(stack, bearer(issuer.token(new_key, sub="carol"))) == "carol"
    # The withdrawn key verifies no new token (one seen before is remembered for at most
    # a minute: tests/auth/test_tokens.py).
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await get_run(stack, bearer(issuer.token(old_key, sub="dave")))
    assert error_info(raised.value).reason == "TOKEN_INVALID"
    assert issuer.jwks_fetches == 2


async def test_a_flood_of_unknown_kids_refetches_at_most_once_per_interval(
    stack: Stack,
) -> None:
    issuer = stack.issuer
    assert await get_run(stack, bearer(issuer.token())) == "alice"
    assert stack.keys.min_refresh_interval == 10.0  # the production default
    stack.clock.advance(10.0)

    async def bogus() -> str:
        forged = IssuerKey.generate("EC", kid=uuid.uuid4().hex)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await get_run(stack, bearer(issuer.token(forged)))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        return str(error_info(raised.value).reason)

    reasons = await asyncio.gather(*(bogus() for _ in range(40)))
    stack.clock.advance(9.9)
    reasons += [await bogus() for _ in range(20)]
    assert set(reasons) == {"TOKEN_INVALID"}
    assert issuer.jwks_fetches == 2  # the first load, then one refetch for 60 unknown kids
    stack.clock.advance(0.1)
    assert await bogus() == "TOKEN_INVALID"
    assert issuer.jwks_fetches == 3  # the next interval: the next refetch
    assert await get_run(stack, bearer(issuer.token())) == "alice"


async def test_an_unreachable_issuer_is_unavailable_and_not_hammered(stack: Stack) -> None:
    issuer = stack.issuer
    issuer.failing = True
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await get_run(stack, bearer(issuer.token()))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(raised.value).reason == "ISSUER_UNAVAILABLE"
    assert sum(issuer.hits.values()) == 1  # one discovery attempt in the interval
    issuer.failing = False
    stack.clock.advance(stack.keys.min_refresh_interval)
    assert await get_run(stack, bearer(issuer.token())) == "alice"


async def test_every_guarded_call_is_handed_to_the_audit_sink(stack: Stack) -> None:
    """One record per call as it ends, whatever ends it: the handler's result, its
    unexpected failure, a refusal, a client's cancellation; never for health checks."""
    token = stack.issuer.token(scope="runs:read runs:write", tenant="beta", sub="bea")
    await get_run(stack, bearer(token))
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.runs.GetRun(rs.GetRunRequest(name="boom"), metadata=bearer(token))
    with pytest.raises(grpc.aio.AioRpcError):
        await get_run(stack, bearer(stack.issuer.token(aud="elsewhere")))

    async def chunks() -> AsyncIterator[asv.UploadInputRequest]:
        yield asv.UploadInputRequest(chunk=b"x")

    await stack.artifacts.UploadInput(chunks(), metadata=bearer(token))
    watch = stack.runs.WatchRun(rs.WatchRunRequest(name=RUN), metadata=bearer(token))
    await anext(aiter(watch))
    watch.cancel()
    health: Any = health_pb2_grpc.HealthStub(stack.channel)
    await health.Check(health_pb2.HealthCheckRequest())
    async with asyncio.timeout(5):
        while len(stack.records) < 5:  # noqa: ASYNC110 - the cancelled stream ends server-side
            await asyncio.sleep(0.01)
    seen = [
        (r.method.rsplit("/", 1)[1], r.subject, r.tenant, r.resource, r.code, r.reason)
        for r in stack.records
    ]
    assert seen == [
        ("GetRun", "bea", "beta", RUN, "OK", ""),
        ("GetRun", "bea", "beta", "boom", "INTERNAL", ""),
        ("GetRun", "", "", RUN, "UNAUTHENTICATED", "TOKEN_AUDIENCE_INVALID"),
        ("UploadInput", "bea", "beta", "tenants/beta", "OK", ""),  # named by its handler
        ("WatchRun", "bea", "beta", RUN, "CANCELLED", ""),
    ]
    assert all(r.audience in ("user", "") and r.duration_us >= 0 for r in stack.records)
    assert all(token not in repr(r) for r in stack.records)


async def test_a_stream_closed_from_another_context_is_audited_as_cancelled(stack: Stack) -> None:
    """asyncio closes a stream handler whose client went away from a task (and context) of its
    own: the interceptor must end it there without error, and audit it as CANCELLED."""
    token = stack.issuer.token(scope="runs:read", tenant="beta", sub="bea")

    async def events(request: Any, context: Any) -> AsyncIterator[rs.WatchRunResponse]:
        while True:
            yield rs.WatchRunResponse()

    # The interceptor's own generator (grpc_interceptor's wrapper around it closes nothing:
    # test_a_cancelled_stream_runs_the_servicers_finally_promptly covers the whole chain).
    context: Any = SimpleNamespace(invocation_metadata=lambda: bearer(token))
    method = "/flnet.api.control.v1.RunService/WatchRun"
    responses = await stack.auth.intercept(events, rs.WatchRunRequest(name=RUN), context, method)

    async def first() -> Any:
        return await anext(responses)

    await asyncio.create_task(first())  # served in a context of its own, as by grpc.aio
    await asyncio.create_task(responses.aclose())  # closed in another, as by the finaliser
    assert [(r.method.rsplit("/", 1)[1], r.code) for r in stack.records] == [
        ("WatchRun", "CANCELLED")
    ]


class Endless(rsg.RunServiceServicer):
    """WatchRun sends 1 MB events until its client goes away; `closed` is set by its finally,
    which notes how many calls the audit sink had seen then. The run "tenants/acme/runs/idle"
    sends one event, then waits in the servicer."""

    def __init__(self, records: list[AuditRecord]) -> None:
        self.sent = 0
        self.closed = asyncio.Event()
        self.records = records
        self.audited_at_close = -1

    async def WatchRun(
        self, request: rs.WatchRunRequest, context: Any
    ) -> AsyncIterator[rs.WatchRunResponse]:
        try:
            while True:
                self.sent += 1
                yield rs.WatchRunResponse(
                    events=[rp.RunEvent(run=request.name, log=tm.LogRecord(message=BULK))]
                )
                if request.name.endswith("/idle"):
                    await asyncio.Event().wait()
        finally:
            self.audited_at_close = len(self.records)
            self.closed.set()


BULK = "x" * 1_000_000


@pytest.mark.parametrize("run", [RUN, "tenants/acme/runs/idle"], ids=["in a write", "idle"])
async def test_a_cancelled_stream_runs_the_servicers_finally_promptly(
    stack: Stack, run: str
) -> None:
    """A client that cancels a server stream ends the servicer's generator (its finally
    runs) at once, without the garbage collector, whether the call was waiting in the
    servicer or blocked writing to a client that stopped reading (grpc.aio abandons the
    generator then: asyncio's async-generator finaliser closes it, layer by layer)."""
    servicer = Endless(stack.records)  # type: ignore[abstract]

    def register(server: grpc.aio.Server) -> None:
        rsg.add_RunServiceServicer_to_server(servicer, server)

    server = Server(SERVICE_NAMES, register, interceptors=[ErrorMapper(DOMAIN), stack.auth])
    port = await server.start("127.0.0.1:0")
    gc.disable()  # refcounts alone must do it
    try:
        async with insecure_channel(f"127.0.0.1:{port}") as channel:
            runs = rsg.RunServiceStub(channel)
            token = stack.issuer.token(scope="runs:read", tenant="acme", sub="ann")
            call = runs.WatchRun(rs.WatchRunRequest(name=run), metadata=bearer(token))
            await anext(aiter(call))
            sent = -1
            while sent != servicer.sent:  # until the server stops sending (or waits)
                sent = servicer.sent
                await asyncio.sleep(0.2)
            assert not servicer.closed.is_set()
            call.cancel()
            async with asyncio.timeout(1):
                await servicer.closed.wait()
                while not stack.records:  # noqa: ASYNC110 - written as the stream ends
                    await asyncio.sleep(0.01)
    finally:
        gc.enable()
        await server.stop(0)
    assert [(r.method.rsplit("/", 1)[1], r.subject, r.resource, r.code) for r in stack.records] == [
        ("WatchRun", "ann", run, "CANCELLED")
    ]
    assert servicer.audited_at_close == 0  # the handler ended inside its call, then the audit
