"""The issuers the platform's access tests run against, behind one interface:

- "jwks": a minimal issuer (discovery + JWKS over HTTP; tests/auth/issuer.py), tokens minted;
- "embedded": FLNet's own development issuer (flnet.issuer), tokens from its token endpoint;
- "oidc-provider": panva's certified oidc-provider (npm), tokens from its token endpoint.

Each has the same clients (CLIENTS) and hands out real tokens for them; `forge` signs any
claims with the issuer's *real* current key, so that each claim check (iss, aud, exp, nbf)
is tested on its own against the keys the issuer actually publishes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from flnet.issuer import Issuer as EmbeddedIssuer
from flnet.issuer import parse_config
from flnet.oauth import http_session, token_request
from flnet.server.auth.local import USER_SCOPES
from tests.auth.issuer import Issuer as JwksIssuer
from tests.auth.issuer import IssuerKey, PrivateKey
from tests.interop.oidc_provider import OidcProvider, ProviderClient


@dataclass(frozen=True)
class Client:
    secret: str
    tenant: str
    scopes: tuple[str, ...]
    audience: str = "flnet"


CLIENTS: Mapping[str, Client] = {
    "acme-app": Client("acme-app-secret", "acme", USER_SCOPES),
    "acme-reader": Client("acme-reader-secret", "acme", ("runs:read",)),
    "globex-app": Client("globex-app-secret", "globex", USER_SCOPES),
    "acme-service": Client(
        "acme-service-secret", "acme", ("orchestrator",), audience="flnet-orchestrator"
    ),
}
KINDS = ("jwks", "embedded", "oidc-provider")


class TrustedIssuer(Protocol):
    url: str

    async def token(self, client_id: str) -> str:
        """A real access token of the client, from the issuer."""

    def signing_key(self) -> tuple[str, str, PrivateKey]:
        """kid, alg and private key the issuer signs with now."""

    async def rotate(self) -> None:
        """A new signing key, published; the old one withdrawn or retired."""

    async def stop(self) -> None: ...


def forge(issuer: TrustedIssuer, *, key: PrivateKey | None = None, **claims: Any) -> str:
    """A token with valid claims of acme-app (`claims` override; None removes), signed with
    the issuer's current key (or `key`, under the current kid)."""
    kid, alg, current = issuer.signing_key()
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": issuer.url, "aud": "flnet", "sub": "acme-app", "client_id": "acme-app",
        "tenant": "acme", "scope": " ".join(USER_SCOPES), "iat": now, "nbf": now,
        "exp": now + 300, "jti": uuid.uuid4().hex,
    }  # fmt: skip
    values.update(claims)
    payload = {k: v for k, v in values.items() if v is not None}
    return jwt.encode(payload, key or current, algorithm=alg, headers={"kid": kid})


def public_pem(issuer: TrustedIssuer) -> bytes:
    return (
        issuer.signing_key()[2]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


class Jwks:
    """tests/auth/issuer.py: discovery + JWKS; tokens minted as the issuer would."""

    def __init__(self) -> None:
        self.issuer = JwksIssuer()
        self.url = ""

    async def start(self) -> None:
        for cid, c in CLIENTS.items():
            claims = {"tenant": c.tenant, "aud": c.audience, "scope": " ".join(c.scopes)}
            self.issuer.clients[cid] = (c.secret, claims)
        await self.issuer.start()
        self.url = self.issuer.url

    async def token(self, client_id: str) -> str:
        c = CLIENTS[client_id]
        return forge(
            self, sub=client_id, client_id=client_id, tenant=c.tenant, aud=c.audience,
            scope=" ".join(c.scopes),
        )  # fmt: skip

    def signing_key(self) -> tuple[str, str, PrivateKey]:
        key = self.issuer.key
        return key.kid, key.alg, key.private

    async def rotate(self) -> None:
        self.issuer.rotate("RSA")

    async def stop(self) -> None:
        await self.issuer.stop()


class Embedded:
    """flnet.issuer.Issuer in this loop, configured with CLIENTS (client_credentials)."""

    def __init__(self, data_dir: Path, hashes: Mapping[str, str]) -> None:
        config = {
            "tenants": ["acme", "globex"],
            "roles": {},
            "users": {},
            "clients": {
                cid: {
                    "secret_hash": hashes[cid],
                    "grant_types": ["client_credentials"],
                    "scopes": list(c.scopes),
                    "tenant": c.tenant,
                    **({"audience": c.audience} if c.audience != "flnet" else {}),
                }
                for cid, c in CLIENTS.items()
            },
        }
        self.issuer = EmbeddedIssuer(parse_config(config), data_dir)
        self.url = ""

    async def start(self) -> None:
        await self.issuer.start("127.0.0.1:0")
        self.url = self.issuer.url

    async def token(self, client_id: str) -> str:
        c = CLIENTS[client_id]
        async with http_session() as http:
            body = await token_request(
                http,
                f"{self.url}/token",
                {"grant_type": "client_credentials", "scope": " ".join(c.scopes)},
                (client_id, c.secret),
            )
        return str(body["access_token"])

    def signing_key(self) -> tuple[str, str, PrivateKey]:
        record = self.issuer.keys.active
        pem = self.issuer.keys.signing_key().as_pem(private=True)
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, PrivateKey)
        return record.kid, self.issuer.config.signing_alg, key

    async def rotate(self) -> None:
        self.issuer.rotate_keys()

    async def stop(self) -> None:
        await self.issuer.stop()


class Provider:
    """oidc-provider in node, configured with CLIENTS."""

    def __init__(self) -> None:
        self.provider = OidcProvider(
            [
                ProviderClient(cid, c.secret, c.tenant, c.scopes, audience=c.audience)
                for cid, c in CLIENTS.items()
            ]
        )
        self.url = ""

    async def start(self) -> None:
        await self.provider.start()
        self.url = self.provider.issuer

    async def token(self, client_id: str) -> str:
        return await self.provider.token(client_id)

    def signing_key(self) -> tuple[str, str, PrivateKey]:
        jwk = self.provider.keys[0]
        algorithm = RSAAlgorithm if jwk["kty"] == "RSA" else ECAlgorithm
        key = algorithm.from_jwk(json.dumps(jwk))
        assert isinstance(key, PrivateKey)
        return jwk["kid"], self.provider.alg, key

    async def rotate(self) -> None:
        await self.provider.rotate_keys(keep_old=False)

    async def stop(self) -> None:
        await self.provider.stop()


def other_key(issuer: TrustedIssuer) -> PrivateKey:
    """A key of the same type as the issuer's, that the issuer never published."""
    _, alg, _ = issuer.signing_key()
    return IssuerKey.generate("EC" if alg.startswith("ES") else "RSA").private
