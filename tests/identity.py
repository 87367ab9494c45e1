"""Identity for tests of FLNet servers: one in-process signing key standing in for the OIDC
issuer (flnet.server.auth.local.LocalIssuer; servers get its public half as a static key set),
and tokens minted with it.

Tests that are about the issuer itself (discovery, JWKS over HTTP, rotation, external
providers) use tests/auth/issuer.py, the embedded issuer or oidc-provider instead."""

from __future__ import annotations

from flnet.server.auth.local import USER_SCOPES, LocalIssuer
from tests.auth.issuer import Issuer, IssuerKey

ISSUER = "https://issuer.flnet.test"
TENANT = "default"
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "admin": ("admin",),
    "data-scientist": USER_SCOPES,
    "auditor": ("runs:read", "tools:read", "artifacts:read", "audit:read"),
}
IDENTITY = LocalIssuer(ISSUER, ROLE_SCOPES)
# The orchestrators' client at a served issuer: id, secret.
ORCHESTRATOR_CLIENT = ("orchestrator", "orchestrator-secret")


async def orchestrator_token() -> str:
    """A TokenSource of an orchestrator's client-credentials token."""
    return IDENTITY.orchestrator_token()


async def served_issuer() -> Issuer:
    """The tests' issuer key published over HTTP on loopback (discovery + JWKS + a
    client_credentials token endpoint), for servers in other processes: give them
    `FLNET_OIDC_ISSUER=issuer.url`, mint with `IDENTITY.token(issuer=issuer.url)`."""
    issuer = Issuer()
    issuer.keys = [IssuerKey(IDENTITY.kid, IDENTITY.private, "ES256")]
    issuer.clients[ORCHESTRATOR_CLIENT[0]] = (
        ORCHESTRATOR_CLIENT[1],
        {"aud": "flnet-orchestrator", "scope": "orchestrator", "tenant": None},
    )
    await issuer.start()
    return issuer


def issuer_env(issuer: Issuer) -> dict[str, str]:
    """The environment of a control plane process trusting `issuer` (served_issuer)."""
    return {"FLNET_OIDC_ISSUER": issuer.url}


def orchestrator_client_env(issuer: Issuer) -> dict[str, str]:
    """The environment of an orchestrator process with its client at `issuer`."""
    return {
        "FLNET_OIDC_ISSUER": issuer.url,
        "FLNET_ORCHESTRATOR_CLIENT_ID": ORCHESTRATOR_CLIENT[0],
        "FLNET_ORCHESTRATOR_CLIENT_SECRET": ORCHESTRATOR_CLIENT[1],
    }
