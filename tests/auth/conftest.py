"""Fixtures of the identity tests: a real OIDC issuer over HTTP on loopback, and a real
grpc.aio server (flnet.server.serving.Server: health, reflection) with the production interceptor
chain, ErrorMapper then AuthInterceptor, in front of minimal servicers of real FLNet
services, so the authorization declarations are the contracts' own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import artifact_service_pb2_grpc as asg
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.api.runtime.v1 import runtime_service_pb2_grpc as rtg
from flnet.channels import insecure_channel
from flnet.server.auth import AuthInterceptor, AuthSettings, JwksClient, require_principal
from flnet.server.auth.audit import AuditRecord, note_resource
from flnet.server.interceptors import ErrorMapper
from flnet.server.serving import Server
from tests.auth.issuer import Issuer, ManualClock

DOMAIN = "flnet.test"
UNDECLARED = "/flnet.test.v1.Probe/Call"
SERVICE_NAMES = [
    rs.DESCRIPTOR.services_by_name["RunService"].full_name,
    asv.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
    rt.DESCRIPTOR.services_by_name["RuntimeService"].full_name,
]
ROLE_SCOPES = {"viewer": ("runs:read",), "operator": ("runs:read", "runs:write")}


class Runs(rsg.RunServiceServicer):
    """GetRun and WatchRun report who asked, from the current principal."""

    async def GetRun(self, request: rs.GetRunRequest, context: Any) -> rs.GetRunResponse:
        if request.name == "boom":
            raise RuntimeError("an unexpected failure")
        principal = require_principal()
        return rs.GetRunResponse(
            run=rp.Run(
                name=request.name, creator=principal.subject, request_id=principal.tenant or ""
            )
        )

    async def WatchRun(
        self, request: rs.WatchRunRequest, context: Any
    ) -> AsyncIterator[rs.WatchRunResponse]:
        for sequence in range(1, 4):
            await asyncio.sleep(0.02)  # interleave with other calls
            yield rs.WatchRunResponse(
                events=[
                    rp.RunEvent(
                        run=request.name,
                        sequence=sequence,
                        log=tm.LogRecord(message=require_principal().subject),
                    )
                ]
            )


class Artifacts(asg.ArtifactServiceServicer):
    """UploadInput (client stream) counts the bytes for the current principal."""

    async def UploadInput(
        self, request_iterator: AsyncIterator[asv.UploadInputRequest], context: Any
    ) -> asv.UploadInputResponse:
        size = 0
        async for message in request_iterator:
            size += len(message.chunk)
        principal = require_principal()
        note_resource(f"tenants/{principal.tenant}")
        return asv.UploadInputResponse(
            artifact=ap.Artifact(name=f"tenants/{principal.tenant}/artifacts/a", size_bytes=size)
        )


class Runtime(rtg.RuntimeServiceServicer):
    """Connect (bidi) welcomes the run of the credential, and acks batches."""

    async def Connect(
        self, request_iterator: AsyncIterator[rt.ConnectRequest], context: Any
    ) -> AsyncIterator[rt.ConnectResponse]:
        async for message in request_iterator:
            principal = require_principal()
            if message.HasField("hello"):
                run = str(principal.claim("run_id"))
                yield rt.ConnectResponse(welcome=rt.Welcome(spec=rt.RunSpec(run=run)))
            else:
                yield rt.ConnectResponse(ack=rt.Ack(sequence=message.batch.sequence))


async def _probe(request: bytes, context: Any) -> bytes:
    return request


@dataclass
class Stack:
    """The server, its interceptor, and stubs over one channel."""

    issuer: Issuer
    auth: AuthInterceptor
    keys: JwksClient
    #: The JwksClient's clock: advance it past `keys.min_refresh_interval` to allow a refetch.
    clock: ManualClock
    channel: grpc.aio.Channel
    runs: rsg.RunServiceAsyncStub
    artifacts: asg.ArtifactServiceAsyncStub
    runtime: rtg.RuntimeServiceAsyncStub
    #: What the interceptor told the audit sink, in the order calls ended.
    records: list[AuditRecord]

    def undeclared(self) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        """A method the server serves whose service declares nothing (not in proto/)."""
        return self.channel.unary_unary(UNDECLARED)


def settings(issuer: Issuer, **overrides: Any) -> AuthSettings:
    values: dict[str, Any] = {
        "issuer": issuer.url,
        "role_scopes": ROLE_SCOPES,
        "roles_claims": ("roles", "realm_access.roles"),
    }
    values.update(overrides)
    return AuthSettings(**values)


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    server = Issuer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def stack(issuer: Issuer) -> AsyncIterator[Stack]:
    config = settings(issuer)  # the production refresh interval (10 s), on a manual clock
    clock = ManualClock()
    keys = config.jwks_client(clock=clock)
    records: list[AuditRecord] = []
    auth = config.interceptor(SERVICE_NAMES, keys=keys, audit=records.append)

    def register(server: grpc.aio.Server) -> None:
        # Only the methods the tests call are implemented (the stubs type the rest abstract).
        rsg.add_RunServiceServicer_to_server(Runs(), server)  # type: ignore[abstract]
        asg.add_ArtifactServiceServicer_to_server(Artifacts(), server)  # type: ignore[abstract]
        rtg.add_RuntimeServiceServicer_to_server(Runtime(), server)  # type: ignore[abstract]
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "flnet.test.v1.Probe", {"Call": grpc.unary_unary_rpc_method_handler(_probe)}
                ),
            )
        )

    server = Server(SERVICE_NAMES, register, interceptors=[ErrorMapper(DOMAIN), auth])
    port = await server.start("127.0.0.1:0")
    channel = insecure_channel(f"127.0.0.1:{port}")
    yield Stack(
        issuer=issuer,
        auth=auth,
        keys=keys,
        clock=clock,
        channel=channel,
        runs=rsg.RunServiceStub(channel),
        artifacts=asg.ArtifactServiceStub(channel),
        runtime=rtg.RuntimeServiceStub(channel),
        records=records,
    )
    await channel.close()
    await server.stop(0)
    await auth.close()
