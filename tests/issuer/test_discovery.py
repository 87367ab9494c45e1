"""Discovery document, JWKS, health, and serving below the issuer URL's path."""

from __future__ import annotations

import aiohttp
import jwt

from flnet.issuer import Issuer
from tests.issuer.conftest import SECRETS, StartIssuer
from tests.issuer.helpers import client_credentials, jwks, verify


async def test_discovery_document_names_every_endpoint_and_capability(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{issuer.url}/.well-known/openid-configuration") as res:
        assert res.status == 200
        doc = await res.json()
    base = issuer.url
    assert base == f"http://127.0.0.1:{issuer.port}"
    assert doc["issuer"] == base
    assert doc["jwks_uri"] == f"{base}/jwks"
    assert doc["token_endpoint"] == f"{base}/token"
    assert doc["authorization_endpoint"] == f"{base}/authorize"
    assert doc["userinfo_endpoint"] == f"{base}/userinfo"
    assert set(doc["grant_types_supported"]) == {
        "authorization_code",
        "client_credentials",
        "refresh_token",
    }
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert doc["subject_types_supported"] == ["public"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",
    }
    for scope in ("openid", "runs:read", "runs:write", "tools:read", "tools:write"):
        assert scope in doc["scopes_supported"]
    for scope in ("artifacts:read", "admin", "orchestrator"):
        assert scope in doc["scopes_supported"]
    assert {"tenant", "roles", "scope", "client_id"} <= set(doc["claims_supported"])
    # RFC 8414 metadata is the same document.
    async with http.get(f"{base}/.well-known/oauth-authorization-server") as res:
        assert await res.json() == doc


async def test_jwks_publishes_the_signing_key_and_a_token_verifies_with_pyjwt(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    keys = (await jwks(http, issuer))["keys"]
    assert len(keys) == 1
    (key,) = keys
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
    assert "d" not in key and "p" not in key  # public parts only

    res = await client_credentials(http, issuer, "control-plane", SECRETS["control-plane"])
    assert res.status == 200
    token = res.body["access_token"]
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "kid": key["kid"], "typ": "at+jwt"}
    claims = await verify(http, issuer, token, audience="flnet-orchestrator")
    assert claims["sub"] == "control-plane"


async def test_health(issuer: Issuer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{issuer.url}/healthz") as res:
        assert res.status == 200


async def test_an_issuer_url_with_a_path_serves_below_that_path(
    start_issuer: StartIssuer, http: aiohttp.ClientSession
) -> None:
    # Behind a proxy routing /oidc to the issuer without rewriting (the gateway's layout).
    issuer = await start_issuer(issuer_url="http://localhost:8080/oidc/")
    assert issuer.url == "http://localhost:8080/oidc"
    local = f"http://127.0.0.1:{issuer.port}/oidc"
    async with http.get(f"{local}/.well-known/openid-configuration") as res:
        doc = await res.json()
    assert doc["issuer"] == "http://localhost:8080/oidc"
    assert doc["token_endpoint"] == "http://localhost:8080/oidc/token"
    async with http.get(f"{local}/jwks") as res:
        assert res.status == 200
    async with http.get(f"http://127.0.0.1:{issuer.port}/jwks") as res:
        assert res.status == 404
