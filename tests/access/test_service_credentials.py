"""Orchestrator -> control plane: an orchestrator attaches with its own client-credentials
token (audience flnet-orchestrator, scope orchestrator) of the control plane's issuer, which
it obtains with client_credentials (flnet.oauth.ClientCredentials) from each kind of
issuer; the control plane takes no other token for the session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from flnet import timeouts
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.api.orchestrator.v1 import session_service_pb2_grpc as spg
from flnet.channels import insecure_channel
from flnet.oauth import ClientCredentials, TokenError
from flnet.orchestrator.app import OrchestratorApp
from flnet.orchestrator.link import Identity
from tests.access.conftest import Guarded
from tests.access.issuers import CLIENTS, TrustedIssuer


async def attach_status(port: int, token: str | None) -> grpc.StatusCode:
    """How the control plane answers an Attach with `token` (OK: Attached came)."""
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    registration = sp.Registration(
        name="probe",
        backend="process",
        capacity=sp.Capacity(cpu_millis=1000, memory_bytes=1 << 30, run_slots=1),
    )

    async def requests() -> AsyncIterator[sp.AttachRequest]:
        # Sent by the call's own task: a refusal that comes before the server reads it is
        # the status read below, not a failed write (which grpc reports as INTERNAL).
        yield sp.AttachRequest(registration=registration)
        await asyncio.Event().wait()  # the stream stays open until the call is cancelled

    async with insecure_channel(f"127.0.0.1:{port}") as channel:
        call = spg.SessionServiceStub(channel).Attach(requests(), metadata=metadata)
        try:
            first = await timeouts.wait_for(call.read(), 30)
        except grpc.aio.AioRpcError as e:
            return e.code()
        finally:
            call.cancel()
        assert isinstance(first, sp.AttachResponse) and first.HasField("attached")
        return grpc.StatusCode.OK


async def test_an_orchestrator_attaches_with_its_client_credentials(
    guarded: Guarded, tmp_path: Path
) -> None:
    issuer = guarded.issuer
    token = ClientCredentials(
        issuer.url, "acme-service", CLIENTS["acme-service"].secret, scope="orchestrator"
    )
    app = OrchestratorApp(
        tmp_path / "orchestrator",
        control_address=f"127.0.0.1:{guarded.app.port}",
        token=token,
        identity=Identity("edge", cpu_millis=1000, memory_bytes=1 << 30, run_slots=1),
    )
    await app.start()
    try:
        await timeouts.wait_for(app.link.attached.wait(), 60)
        [listed] = await guarded.app.store.fleet.orchestrators()
        assert (listed.name, listed.subject) == ("edge", "acme-service")
        assert await attach_status(guarded.app.port, await token()) == grpc.StatusCode.OK
    finally:
        await app.stop()
    assert await attach_status(guarded.app.port, None) == grpc.StatusCode.UNAUTHENTICATED
    user = await issuer.token("acme-app")  # the issuer's, for the user API
    assert await attach_status(guarded.app.port, user) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_wrong_client_secret_gets_no_service_token(trusted: TrustedIssuer) -> None:
    wrong = ClientCredentials(trusted.url, "acme-service", "not-the-secret", scope="orchestrator")
    with pytest.raises(TokenError) as raised:
        await wrong()
    assert raised.value.error == "invalid_client"
    assert "not-the-secret" not in str(raised.value)
