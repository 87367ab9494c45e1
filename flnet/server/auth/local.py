"""LocalIssuer: a signing key held in this process that mints access tokens, and the public
key set servers trust it with. For tests, benchmarks and tools that run a whole platform in
one process; a deployment trusts its OIDC issuer's JWKS instead."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from .interceptor import AuthInterceptor
from .jwks import StaticKeys
from .settings import AuthSettings

USER_SCOPES = ("runs:read", "runs:write", "tools:read", "tools:write", "artifacts:read")


class LocalIssuer:
    """ES256 tokens of issuer `url`; `role_scopes` is the role map servers are given."""

    def __init__(self, url: str, role_scopes: Mapping[str, Sequence[str]] | None = None) -> None:
        self.url = url
        self.role_scopes = {role: tuple(scopes) for role, scopes in (role_scopes or {}).items()}
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.kid = uuid.uuid4().hex[:12]

    def jwk(self) -> dict[str, Any]:
        """The public JWK, as an issuer publishes it."""
        data = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "use": "sig", "alg": "ES256"}

    def keys(self) -> StaticKeys:
        return StaticKeys({"keys": [self.jwk()]})

    def settings(self, **overrides: Any) -> AuthSettings:
        """Settings trusting this issuer (`overrides` win, e.g. another `issuer` URL under
        which the same key is served)."""
        values: dict[str, Any] = {"issuer": self.url, "role_scopes": self.role_scopes}
        values.update(overrides)
        return AuthSettings(**values)

    def interceptor(self, services: Iterable[str], **kwargs: Any) -> AuthInterceptor:
        """A server's authorization interceptor trusting this issuer's key."""
        issuer = kwargs.pop("issuer", self.url)
        return self.settings(issuer=issuer).interceptor(services, keys=self.keys(), **kwargs)

    def token(
        self,
        *,
        subject: str = "alice",
        tenant: str | None = "default",
        scopes: Sequence[str] = USER_SCOPES,
        roles: Sequence[str] = (),
        audience: str = "flnet",
        client_id: str = "flnet-cli",
        ttl: float = 3600,
        issuer: str | None = None,
        **claims: Any,
    ) -> str:
        """A valid token (of `issuer`, default this one's URL), with `claims` added (None
        removes one)."""
        now = int(time.time())
        values: dict[str, Any] = {
            "iss": issuer or self.url, "aud": audience, "sub": subject, "tenant": tenant,
            "scope": " ".join(scopes), "roles": list(roles) or None, "client_id": client_id,
            "iat": now, "nbf": now, "exp": now + int(ttl), "jti": uuid.uuid4().hex,
        }  # fmt: skip
        values.update(claims)
        return jwt.encode(
            {k: v for k, v in values.items() if v is not None},
            self.private,
            algorithm="ES256",
            headers={"kid": self.kid},
        )

    def orchestrator_token(self, issuer: str | None = None, client: str = "orchestrator") -> str:
        """An orchestrator's client-credentials token (its client is its subject)."""
        return self.token(
            subject=client, client_id=client, tenant=None,
            audience="flnet-orchestrator", scopes=("orchestrator",), issuer=issuer,
        )  # fmt: skip
