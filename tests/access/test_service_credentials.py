"""Control plane -> orchestrator: the orchestrator accepts only service tokens (audience
flnet-orchestrator, scope orchestrator) of its issuer, which the control plane obtains with
client_credentials (flnet.oauth.ClientCredentials) from each kind of issuer."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from flnet.api.orchestrator.v1 import orchestrator_pb2 as op
from flnet.api.orchestrator.v1 import orchestrator_service_pb2_grpc as og
from flnet.channels import TokenSource, insecure_channel
from flnet.oauth import ClientCredentials, TokenError
from flnet.orchestrator.app import OrchestratorApp
from flnet.orchestrator.service import SERVICE_NAME
from flnet.server.auth import AuthSettings
from tests.access.issuers import CLIENTS, TrustedIssuer


async def list_containers(port: int, token: str | TokenSource | None) -> grpc.StatusCode:
    async with insecure_channel(f"127.0.0.1:{port}", token) as channel:
        stub: og.OrchestratorServiceAsyncStub = og.OrchestratorServiceStub(channel)
        try:
            await stub.ListRunContainers(op.ListRunContainersRequest())
        except grpc.aio.AioRpcError as e:
            return e.code()
    return grpc.StatusCode.OK


async def test_the_orchestrator_takes_the_control_planes_service_token(
    trusted: TrustedIssuer, tmp_path: Path
) -> None:
    auth = AuthSettings(issuer=trusted.url).interceptor([SERVICE_NAME])
    app = OrchestratorApp(tmp_path / "orchestrator", auth=auth)
    port = await app.start("127.0.0.1:0")
    service = ClientCredentials(
        trusted.url, "acme-service", CLIENTS["acme-service"].secret, scope="orchestrator"
    )
    try:
        assert await list_containers(port, service) == grpc.StatusCode.OK
        assert await list_containers(port, None) == grpc.StatusCode.UNAUTHENTICATED
        user = await trusted.token("acme-app")  # the issuer's, for the user API
        assert await list_containers(port, user) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await app.stop()


async def test_a_wrong_client_secret_gets_no_service_token(trusted: TrustedIssuer) -> None:
    wrong = ClientCredentials(trusted.url, "acme-service", "not-the-secret", scope="orchestrator")
    with pytest.raises(TokenError) as raised:
        await wrong()
    assert raised.value.error == "invalid_client"
    assert "not-the-secret" not in str(raised.value)
