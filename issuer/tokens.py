"""Signed tokens: JWT access tokens (RFC 9068, `typ: at+jwt`) and OpenID Connect ID tokens.

Access-token claims: `iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti`, `scope` (space
separated), the tenant claim (name configurable), `roles`, `client_id`, and for users
`auth_time` and `preferred_username`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from flnet.issuer.config import SUPPORTED_SCOPES, IssuerConfig, User
from flnet.issuer.keys import Clock, KeyStore

ACCESS_TOKEN_TYPE = "at+jwt"
CLOCK_SKEW = 30


def ordered_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Scopes deduplicated, in the canonical order of SUPPORTED_SCOPES."""
    wanted = set(scopes)
    return tuple(s for s in SUPPORTED_SCOPES if s in wanted)


@dataclass(frozen=True)
class Grant:
    """What a token speaks for: a user (through a client) or a client on its own behalf."""

    subject: str
    client_id: str
    scopes: tuple[str, ...]
    tenant: str
    roles: tuple[str, ...]
    audience: str
    user: User | None = None
    auth_time: int | None = None

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    expires_in: int


class TokenMinter:
    """Signs tokens with the key store's active key."""

    def __init__(
        self, issuer: str, config: IssuerConfig, keys: KeyStore, clock: Clock = time.time
    ) -> None:
        self.issuer = issuer
        self._config = config
        self._keys = keys
        self._clock = clock

    def _sign(self, claims: dict[str, Any], typ: str) -> str:
        key = self._keys.signing_key()
        header = {"alg": key.alg, "kid": key.kid, "typ": typ}
        return jwt.encode(header, claims, key, algorithms=[str(key.alg)])

    def access_token(self, grant: Grant) -> IssuedToken:
        now = int(self._clock())
        ttl = self._config.access_token_ttl
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": grant.subject,
            "aud": grant.audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": jti,
            "client_id": grant.client_id,
            "scope": grant.scope,
            self._config.tenant_claim: grant.tenant,
            "roles": list(grant.roles),
        }
        if grant.user is not None:
            claims["preferred_username"] = grant.user.username
        if grant.auth_time is not None:
            claims["auth_time"] = grant.auth_time
        return IssuedToken(self._sign(claims, ACCESS_TOKEN_TYPE), jti, ttl)

    def id_token(self, grant: Grant, nonce: str | None) -> str:
        """The OpenID Connect ID token of a user grant (audience: the client)."""
        assert grant.user is not None
        now = int(self._clock())
        user = grant.user
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": grant.subject,
            "aud": grant.client_id,
            "azp": grant.client_id,
            "iat": now,
            "exp": now + self._config.id_token_ttl,
            "auth_time": grant.auth_time,
            self._config.tenant_claim: grant.tenant,
        }
        if nonce:
            claims["nonce"] = nonce
        claims.update(profile_claims(user, grant.scopes))
        return self._sign(claims, "JWT")

    def verify_access_token(self, token: str) -> dict[str, Any]:
        """The claims of an access token this issuer signed and that is valid now (its
        audience is not checked: any of our tokens may read /userinfo). Raises ValueError."""
        try:
            decoded = jwt.decode(
                token, self._keys.verification_keys(), algorithms=["RS256", "ES256"]
            )
            if decoded.header.get("typ") != ACCESS_TOKEN_TYPE:
                raise ValueError("not an access token")
            JWTClaimsRegistry(
                now=int(self._clock()),
                leeway=CLOCK_SKEW,
                iss={"essential": True, "value": self.issuer},
                sub={"essential": True},
                exp={"essential": True},
            ).validate(decoded.claims)
        except JoseError as e:
            raise ValueError(f"invalid access token: {e}") from None
        return decoded.claims


def profile_claims(user: User, scopes: Iterable[str]) -> dict[str, Any]:
    """The user's claims that the `profile` and `email` scopes release."""
    granted = set(scopes)
    claims: dict[str, Any] = {}
    if "profile" in granted:
        claims["preferred_username"] = user.username
        if user.name:
            claims["name"] = user.name
    if "email" in granted and user.email:
        claims["email"] = user.email
    return claims
