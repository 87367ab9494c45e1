"""TokenValidator against a real issuer over HTTP, and the claim helpers: scope formats,
roles mapped to scopes, tenant, subject, algorithm pinning per key type."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from flnet.errors import FlnetError, PermissionDenied, Unauthenticated
from flnet.server.auth import (
    JwksClient,
    Reason,
    StaticKeys,
    TokenValidator,
    scopes_of_roles,
    token_roles,
    token_scopes,
)
from flnet.server.auth.tokens import MAX_TOKEN_BYTES, claim_at
from tests.auth.issuer import Issuer, IssuerKey, b64

ROLE_SCOPES = {"viewer": ["runs:read", "tools:read"], "operator": ["runs:write"]}


@pytest.fixture
async def keys(issuer: Issuer) -> AsyncIterator[JwksClient]:
    client = JwksClient(issuer.url, min_refresh_interval=0.0)
    yield client
    await client.close()


def validator(issuer: Issuer, keys: Any, **overrides: Any) -> TokenValidator:
    values: dict[str, Any] = {
        "issuer": issuer.url,
        "audiences": ["flnet", "flnet-api"],
        "algorithms": ["RS256", "ES256", "PS256"],
        "roles_claims": ["roles", "realm_access.roles", "https://flnet.dev/roles"],
        "role_scopes": ROLE_SCOPES,
    }
    values.update(overrides)
    return TokenValidator(keys, **values)


async def refusal(v: TokenValidator, token: str) -> tuple[type[FlnetError], str]:
    with pytest.raises(FlnetError) as raised:
        await v.validate(token)
    return type(raised.value), raised.value.reason


# -- claim helpers ------------------------------------------------------------------------


def test_scope_claim_formats() -> None:
    assert token_scopes({"scope": "runs:read  tools:read"}) == {"runs:read", "tools:read"}
    assert token_scopes({"scp": ["runs:read", "admin"]}) == {"runs:read", "admin"}
    assert token_scopes({"scp": "runs:write"}) == {"runs:write"}
    assert token_scopes({"scope": "a", "scp": ["b"]}) == {"a", "b"}
    # Anything else grants nothing (never more scopes than written).
    assert token_scopes({"scope": ["runs:read"], "scp": [1, None, "x y", ""]}) == {"runs:read"}
    assert token_scopes({"scope": 7, "scp": {"runs:read": True}}) == frozenset()
    assert token_scopes({}) == frozenset()


def test_roles_and_their_scopes() -> None:
    claims = {
        "roles": ["viewer"],
        "realm_access": {"roles": ["operator", "offline_access"]},
        "https://flnet.dev/roles": "auditor",
    }
    roles = token_roles(claims, ["roles", "realm_access.roles", "https://flnet.dev/roles"])
    assert roles == {"viewer", "operator", "offline_access", "auditor"}
    assert scopes_of_roles(roles, ROLE_SCOPES) == {"runs:read", "tools:read", "runs:write"}
    assert scopes_of_roles(["auditor"], ROLE_SCOPES) == frozenset()
    assert token_roles({"realm_access": ["x"]}, ["realm_access.roles"]) == frozenset()
    assert claim_at({"a": {"b": {"c": 1}}}, "a.b.c") == 1
    assert claim_at({"a.b": 2, "a": {"b": 3}}, "a.b") == 2


# -- validation -----------------------------------------------------------------------------


async def test_a_valid_token_gives_its_principal(issuer: Issuer, keys: JwksClient) -> None:
    v = validator(issuer, keys)
    claims = issuer.claims(scope="runs:read", roles=["operator"], tenant="acme", sub="alice")
    token = jwt.encode(claims, issuer.key.private, "RS256", headers={"kid": issuer.key.kid})
    p = await v.validate(token)
    assert (p.subject, p.tenant, p.audience, p.issuer) == ("alice", "acme", "user", issuer.url)
    assert p.scopes == {"runs:read", "runs:write"}
    assert p.roles == {"operator"}
    assert p.client_id == "flnet-cli"
    assert p.expires_at == datetime.fromtimestamp(claims["exp"], UTC)
    assert p.claim("jti") == claims["jti"]
    with pytest.raises(TypeError):
        p.claims["sub"] = "mallory"  # type: ignore[index]


async def test_subject_tenant_and_audience_variants(issuer: Issuer, keys: JwksClient) -> None:
    v = validator(issuer, keys, default_tenant="default")
    # A client-credentials token without sub speaks as its client; aud may be a list.
    p = await v.validate(issuer.token(sub=None, tenant=None, aud=["other", "flnet-api"]))
    assert (p.subject, p.tenant) == ("flnet-cli", "default")
    assert await refusal(v, issuer.token(sub=None, client_id=None)) == (
        Unauthenticated,
        Reason.TOKEN_INVALID,
    )
    assert await refusal(v, issuer.token(tenant=["acme"])) == (
        Unauthenticated,
        Reason.TOKEN_INVALID,
    )
    strict = validator(issuer, keys, require_tenant=True)
    assert await refusal(strict, issuer.token(tenant=None)) == (
        PermissionDenied,
        Reason.TENANT_MISSING,
    )
    nested = validator(issuer, keys, tenant_claim="org.id")
    assert (await nested.validate(issuer.token(org={"id": "beta"}))).tenant == "beta"


async def test_algorithms_are_pinned_per_key_type(issuer: Issuer, keys: JwksClient) -> None:
    v = validator(issuer, keys)
    rsa_key, ec_key = issuer.keys
    # An EC signature presented under the RSA key's kid: no RSA key verifies ES256.
    forged = jwt.encode(issuer.claims(), ec_key.private, "ES256", headers={"kid": rsa_key.kid})
    assert await refusal(v, forged) == (Unauthenticated, Reason.TOKEN_INVALID)
    # The RSA JWK pins "alg": "RS256": PS256 with the same key is refused although allowed.
    pss = jwt.encode(issuer.claims(), rsa_key.private, "PS256", headers={"kid": rsa_key.kid})
    assert await refusal(v, pss) == (Unauthenticated, Reason.TOKEN_INVALID)
    # An algorithm outside the validator's list.
    rs512 = jwt.encode(issuer.claims(), rsa_key.private, "RS512", headers={"kid": rsa_key.kid})
    assert await refusal(v, rs512) == (Unauthenticated, Reason.TOKEN_INVALID)
    # A critical header extension.
    crit = issuer.token(headers={"crit": ["exp"], "exp": 1})
    assert await refusal(v, crit) == (Unauthenticated, Reason.TOKEN_INVALID)


async def test_a_token_without_kid_is_tried_against_each_key(
    issuer: Issuer, keys: JwksClient
) -> None:
    v = validator(issuer, keys)
    _, ec_key = issuer.keys
    token = jwt.encode(issuer.claims(sub="nokid"), ec_key.private, "ES256")
    assert (await v.validate(token)).subject == "nokid"
    stranger = IssuerKey.generate("EC")
    token = jwt.encode(issuer.claims(), stranger.private, "ES256")
    assert await refusal(v, token) == (Unauthenticated, Reason.TOKEN_INVALID)


async def test_shapes_refused_before_any_key_lookup(issuer: Issuer, keys: JwksClient) -> None:
    v = validator(issuer, keys)
    for token in (
        "",
        "a.b",
        "a.b.c.d.e",  # JWE
        "x" * (MAX_TOKEN_BYTES + 1),
        f"{b64(b'[1]')}.e30.",  # header not an object
        "!!!.e30.c2ln",
    ):
        assert await refusal(v, token) == (Unauthenticated, Reason.TOKEN_MALFORMED)
    payload_not_json = f"{b64({'alg': 'RS256', 'kid': issuer.key.kid})}.{b64(b'nope')}.c2ln"
    assert (await refusal(v, payload_not_json))[0] is Unauthenticated
    assert issuer.jwks_fetches <= 1


async def test_messages_never_carry_the_token(issuer: Issuer, keys: JwksClient) -> None:
    v = validator(issuer, keys)
    for token in (
        issuer.token(aud="x"),
        issuer.token(iss="https://evil.example"),
        issuer.token(exp=1),
        issuer.unsigned_token(),
        issuer.hs256_with_public_key(),
    ):
        with pytest.raises(Unauthenticated) as raised:
            await v.validate(token)
        text = f"{raised.value} {raised.value.message} {raised.value.metadata}"
        assert all(part not in text for part in token.split(".") if len(part) > 4)


def test_symmetric_and_none_algorithms_cannot_be_configured() -> None:
    keys = StaticKeys({"keys": []})
    for algorithms in (["HS256"], ["RS256", "none"], [], ["RS256", "HS512"]):
        with pytest.raises(ValueError):
            TokenValidator(keys, issuer="https://i", audiences=["a"], algorithms=algorithms)
    with pytest.raises(ValueError):
        TokenValidator(keys, issuer="https://i", audiences=[])


async def test_static_keys(issuer: Issuer) -> None:
    """Keys held locally (e.g. for credentials the control plane mints): no HTTP at all."""
    v = validator(issuer, StaticKeys({"keys": [k.jwk() for k in issuer.keys]}))
    assert (await v.validate(issuer.token())).subject == "alice"
    assert sum(issuer.hits.values()) == 0


async def test_verified_tokens_are_remembered_within_bounds(issuer: Issuer) -> None:
    """A token verified once is not verified again for `remember` seconds, never past its
    `exp` (plus leeway); refusals are never remembered."""
    real = time.time()
    now = [real]
    published = StaticKeys({"keys": [k.jwk() for k in issuer.keys]})
    v = validator(issuer, published, leeway=0, remember=60, clock=lambda: now[0])
    long_lived = issuer.token(exp=int(real) + 3600)
    short_lived = issuer.token(exp=int(real) + 5)
    assert (await v.validate(long_lived)).subject == "alice"
    assert (await v.validate(short_lived)).subject == "alice"
    forged = issuer.token(IssuerKey.generate("RSA", kid=issuer.key.kid))
    assert await refusal(v, forged) == (Unauthenticated, "TOKEN_INVALID")

    v.keys = StaticKeys({"keys": []})  # the issuer withdraws its key
    now[0] = real + 4
    assert (await v.validate(long_lived)).subject == "alice"  # remembered
    assert (await v.validate(short_lived)).subject == "alice"
    now[0] = real + 6  # past the short-lived token's exp: verified again, refused
    assert await refusal(v, short_lived) == (Unauthenticated, "TOKEN_INVALID")
    assert (await v.validate(long_lived)).subject == "alice"
    now[0] = real + 61  # past the memory: verified again, refused
    assert await refusal(v, long_lived) == (Unauthenticated, "TOKEN_INVALID")
    v.keys = published
    assert await refusal(v, forged) == (Unauthenticated, "TOKEN_INVALID")  # never remembered
