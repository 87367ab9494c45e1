"""Fixtures of the access tests: an issuer of each kind (tests/access/issuers.py) and a real
control plane trusting it exactly as a deployment would, through OIDC discovery and the
issuer's JWKS over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from flnet.api.control.v1 import artifact_service_pb2_grpc as asg
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.api.control.v1 import tool_service_pb2_grpc as tsg
from flnet.channels import insecure_channel
from flnet.control.app import ControlApp
from flnet.issuer import hash_secret
from flnet.server.auth import AuthSettings
from tests.access.issuers import CLIENTS, KINDS, Embedded, Jwks, Provider, TrustedIssuer
from tests.conftest import control_settings
from tests.interop.oidc_provider import require_node_modules

# Seconds between JWKS fetches of the control plane's key source: short, so that a test of
# key rotation waits little; the production default is 10.
REFRESH_INTERVAL = 1.0


@pytest.fixture(scope="session")
def hashes() -> dict[str, str]:
    """scrypt is slow on purpose: hash the client secrets once per session."""
    return {cid: hash_secret(c.secret) for cid, c in CLIENTS.items()}


@pytest.fixture(params=KINDS)
async def trusted(
    request: pytest.FixtureRequest, tmp_path: Path, hashes: dict[str, str]
) -> AsyncIterator[TrustedIssuer]:
    issuer: Jwks | Embedded | Provider
    if request.param == "jwks":
        issuer = Jwks()
    elif request.param == "embedded":
        issuer = Embedded(tmp_path / "issuer", hashes)
    else:
        require_node_modules()
        issuer = Provider()
    await issuer.start()
    yield issuer
    await issuer.stop()


@dataclass
class Guarded:
    """A control plane trusting `issuer`, and stubs on a channel that adds no token."""

    app: ControlApp
    issuer: TrustedIssuer
    runs: rsg.RunServiceAsyncStub
    tools: tsg.ToolServiceAsyncStub
    artifacts: asg.ArtifactServiceAsyncStub


@pytest.fixture
async def guarded(trusted: TrustedIssuer, tmp_path: Path) -> AsyncIterator[Guarded]:
    auth = AuthSettings(issuer=trusted.url, min_refresh_interval=REFRESH_INTERVAL)
    app = ControlApp(control_settings(tmp_path, auth=auth))
    await app.start("127.0.0.1:0")
    channel: grpc.aio.Channel = insecure_channel(f"127.0.0.1:{app.port}")
    yield Guarded(
        app,
        trusted,
        rsg.RunServiceStub(channel),
        tsg.ToolServiceStub(channel),
        asg.ArtifactServiceStub(channel),
    )
    await channel.close()
    await app.stop(0.5)
