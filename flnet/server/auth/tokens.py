"""Bearer-token validation: a JWT access token in, a Principal out (or a domain error).

`TokenValidator` checks, in this order, and stops at the first failure:

1. shape: a compact JWS (three base64url parts) of at most `MAX_TOKEN_BYTES`, readable
   header (`TOKEN_MALFORMED`);
2. algorithm: the header's `alg` is one of the validator's `algorithms`, which can never
   hold `none` or HS* (`TOKEN_INVALID`); no `crit` / `b64` extensions; `jku`, `x5u` and
   `jwk` headers are ignored (keys come from the issuer's JWKS only);
3. key: the issuer's key with the header's `kid` (one refetch of the JWKS when unknown),
   of a type matching the algorithm (RSA keys verify only RS*/PS*, EC keys only ES* on
   their curve) (`TOKEN_INVALID`);
4. signature (`TOKEN_INVALID`), then `exp` (required, `TOKEN_EXPIRED`), `nbf` and `iat`
   (`TOKEN_NOT_YET_VALID`), `iss` (required, exact, `TOKEN_ISSUER_INVALID`), `aud`
   (required, one of `audiences`, `TOKEN_AUDIENCE_INVALID`), all with `leeway` seconds of
   clock skew; a subject (`sub`, else `client_id`/`azp`) must be present;
5. tenant: from `tenant_claim` (or `default_tenant`); PERMISSION_DENIED `TENANT_MISSING`
   when `require_tenant` and there is none.

Scopes are the union of the `scope` claim (space-separated string, RFC 8693/9068), the
`scp` claim (list, or string, as Azure AD and Okta issue it) and the scopes the token's
roles map to (`role_scopes`; roles from `roles_claims`, dotted paths such as Keycloak's
`realm_access.roles`). Messages are fixed texts: the token, its claims and the JWT
library's messages are never in them nor in logs.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol

import jwt
from jwt.utils import base64url_decode

from flnet.errors import PermissionDenied, Unauthenticated

from .errors import Reason
from .jwks import KeySource, SigningKey
from .principal import Principal

log = logging.getLogger(__name__)

#: Algorithms a validator may accept. Symmetric (HS*) and `none` are not among them: with
#: keys published in a JWKS an HMAC "secret" would be public.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_ALGORITHMS = ("RS256", "ES256")
DEFAULT_LEEWAY = 30.0
# A verified token is remembered (under its digest, never the token itself) for at most this
# long and never past its `exp`, so that a client calling many times with one token pays
# for one signature check per minute instead of one per call. The price: a key the issuer
# withdraws stops verifying tokens already seen at most this long later.
VERIFIED_SECONDS = 60.0
VERIFIED_ENTRIES = 10_000
#: Longer tokens are refused before any parsing (gRPC's metadata limit is 8 KiB anyway).
MAX_TOKEN_BYTES = 8192

_COMPACT_JWS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$")


class Validator(Protocol):
    """Turns a bearer token into a Principal or raises Unauthenticated / PermissionDenied /
    Unavailable. TokenValidator is one; a server may plug in others per audience."""

    async def validate(self, token: str) -> Principal: ...

    async def close(self) -> None: ...


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim named `path`, or, when there is none, the nested one its dots describe
    ("realm_access.roles"). Namespaced claim names ("https://flnet.dev/roles") contain
    dots, hence the literal lookup first."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _words(value: Any) -> set[str]:
    """Strings of a space-separated string or a list of strings; anything else is none."""
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str) and v and " " not in v}
    return set()


def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """Scopes of the `scope` claim (space-separated string) and the `scp` claim (list or
    space-separated string). Entries of other types are ignored (fewer scopes, never more)."""
    return frozenset(_words(claims.get("scope")) | _words(claims.get("scp")))


def token_roles(claims: Mapping[str, Any], roles_claims: Iterable[str]) -> frozenset[str]:
    """Roles found at any of `roles_claims` (each a list of strings or a space-separated
    string)."""
    roles: set[str] = set()
    for path in roles_claims:
        roles |= _words(claim_at(claims, path))
    return frozenset(roles)


def scopes_of_roles(
    roles: Iterable[str], role_scopes: Mapping[str, Iterable[str]]
) -> frozenset[str]:
    """Scopes the configured role map grants to `roles`; unmapped roles grant nothing."""
    scopes: set[str] = set()
    for role in roles:
        scopes.update(role_scopes.get(role, ()))
    return frozenset(scopes)


def _header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS; TOKEN_MALFORMED when it is not one."""
    malformed = Unauthenticated("malformed bearer token", Reason.TOKEN_MALFORMED)
    if len(token) > MAX_TOKEN_BYTES or not _COMPACT_JWS.match(token):
        raise malformed
    try:
        header = json.loads(base64url_decode(token.split(".", 1)[0].encode("ascii")))
    except (ValueError, binascii.Error, RecursionError):
        raise malformed from None
    if not isinstance(header, dict):
        raise malformed
    return header


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else None
    except (OverflowError, OSError, ValueError):
        return None


class TokenValidator:
    """Validates access tokens of one issuer for one FLNet audience (see the module
    docstring).

    - `keys`: where verification keys come from (a JwksClient, or StaticKeys).
    - `issuer`: the exact `iss` accepted.
    - `audiences`: `aud` values accepted (any one of them).
    - `audience_kind`: the FLNet audience this validator serves ("user", "runtime",
      "orchestrator"); it becomes `Principal.audience`.
    - `algorithms`: accepted `alg`s, a subset of SUPPORTED_ALGORITHMS (ValueError else).
    - `leeway`: seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    - `tenant_claim`, `default_tenant`, `require_tenant`: where the tenant comes from,
      and whether a token without one is refused.
    - `roles_claims`, `role_scopes`: roles and the scopes each grants.
    - `remember`: seconds a verified token is remembered (VERIFIED_SECONDS; 0: never).
    - `clock`: wall-clock seconds (time.time), for that memory.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audiences: Iterable[str],
        audience_kind: str = "user",
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        leeway: float = DEFAULT_LEEWAY,
        tenant_claim: str = "tenant",
        default_tenant: str | None = None,
        require_tenant: bool = False,
        roles_claims: Iterable[str] = ("roles",),
        role_scopes: Mapping[str, Iterable[str]] | None = None,
        remember: float = VERIFIED_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithms = frozenset(algorithms)
        refused = self.algorithms - SUPPORTED_ALGORITHMS
        if refused or not self.algorithms:
            raise ValueError(
                f"algorithms not accepted: {sorted(refused) or 'none given'}; "
                f"choose from {sorted(SUPPORTED_ALGORITHMS)}"
            )
        self.audiences = tuple(audiences)
        if not self.audiences:
            raise ValueError("at least one audience is required")
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        self.keys = keys
        self.issuer = issuer
        self.audience_kind = audience_kind
        self.leeway = leeway
        self.tenant_claim = tenant_claim
        self.default_tenant = default_tenant
        self.require_tenant = require_tenant
        self.roles_claims = tuple(roles_claims)
        self.role_scopes = {r: frozenset(s) for r, s in (role_scopes or {}).items()}
        self.remember = remember
        self._clock = clock
        # digest -> (principal, until): most recently used last.
        self._verified: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()

    async def validate(self, token: str) -> Principal:
        """The Principal of a valid token; Unauthenticated (or PermissionDenied for a
        missing tenant, Unavailable when the issuer's keys cannot be fetched) otherwise."""
        if self.remember <= 0:
            return await self._verify(token)
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        known = self._verified.get(digest)
        if known is not None:
            if now < known[1]:
                self._verified.move_to_end(digest)
                return known[0]
            del self._verified[digest]
        principal = await self._verify(token)
        until = now + self.remember
        if principal.expires_at is not None:
            until = min(until, principal.expires_at.timestamp() + self.leeway)
        self._verified[digest] = (principal, until)
        if len(self._verified) > VERIFIED_ENTRIES:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> Principal:
        header = _header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthenticated("token signing algorithm not accepted", Reason.TOKEN_INVALID)
        if "crit" in header or "b64" in header:
            raise Unauthenticated("token header extensions not accepted", Reason.TOKEN_INVALID)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("malformed bearer token", Reason.TOKEN_MALFORMED)
        candidates = [key for key in await self.keys.find(kid) if key.accepts(alg)]
        if not candidates:
            raise Unauthenticated("token signing key not found", Reason.TOKEN_INVALID)
        claims = self._decode(token, alg, candidates)
        return self._principal(claims)

    def _decode(self, token: str, alg: str, candidates: Sequence[SigningKey]) -> dict[str, Any]:
        for candidate in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key=candidate.key,
                    algorithms=[alg],
                    audience=self.audiences,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options={"require": ["exp", "iss", "aud"], "strict_aud": False},
                )
                return claims
            except jwt.InvalidSignatureError:
                continue  # a token without kid: try the next key
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("token expired", Reason.TOKEN_EXPIRED) from None
            except jwt.ImmatureSignatureError:
                raise Unauthenticated("token not yet valid", Reason.TOKEN_NOT_YET_VALID) from None
            except jwt.InvalidIssuerError:
                raise Unauthenticated(
                    "token issuer not accepted", Reason.TOKEN_ISSUER_INVALID
                ) from None
            except jwt.InvalidAudienceError:
                raise Unauthenticated(
                    "token audience not accepted",
                    Reason.TOKEN_AUDIENCE_INVALID,
                    metadata={"audience": self.audience_kind},
                ) from None
            except jwt.MissingRequiredClaimError as e:
                raise Unauthenticated(
                    f"token claim missing: {e.claim}", Reason.TOKEN_INVALID
                ) from None
            except jwt.DecodeError:
                raise Unauthenticated("malformed bearer token", Reason.TOKEN_MALFORMED) from None
            except jwt.PyJWTError as e:  # any other verdict of the library: refused
                log.debug("token refused: %s", type(e).__name__)
                raise Unauthenticated("invalid token", Reason.TOKEN_INVALID) from None
        raise Unauthenticated("invalid token signature", Reason.TOKEN_INVALID)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        client_id = claims.get("client_id", claims.get("azp"))
        client_id = client_id if isinstance(client_id, str) and client_id else None
        subject = claims.get("sub")
        subject = subject if isinstance(subject, str) and subject else client_id
        if subject is None:
            raise Unauthenticated("token claim missing: sub", Reason.TOKEN_INVALID)
        tenant = claim_at(claims, self.tenant_claim)
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise Unauthenticated("token tenant claim is not a string", Reason.TOKEN_INVALID)
        tenant = tenant or self.default_tenant
        if tenant is None and self.require_tenant:
            raise PermissionDenied("token carries no tenant", Reason.TENANT_MISSING)
        roles = token_roles(claims, self.roles_claims)
        return Principal(
            subject=subject,
            audience=self.audience_kind,
            issuer=self.issuer,
            tenant=tenant,
            scopes=token_scopes(claims) | scopes_of_roles(roles, self.role_scopes),
            roles=roles,
            client_id=client_id,
            expires_at=_time(claims.get("exp")),
            claims=MappingProxyType(claims),
        )

    async def close(self) -> None:
        await self.keys.close()
