"""The client_credentials grant: claims, client authentication methods and every failure."""

from __future__ import annotations

import time
from dataclasses import replace

import aiohttp
import jwt

from flnet.issuer import Issuer, IssuerConfig
from flnet.oauth import basic_authorization
from tests.issuer.conftest import SECRETS, StartIssuer
from tests.issuer.helpers import client_credentials, token_request, verify

REPORTER = ("reporter", SECRETS["reporter"])


async def test_client_credentials_issues_an_rfc9068_access_token(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    before = int(time.time())
    res = await client_credentials(http, issuer, *REPORTER)
    assert res.status == 200, res.body
    assert res.headers["Cache-Control"] == "no-store"
    body = res.body
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "runs:read tools:read"  # all the client's scopes by default
    assert "refresh_token" not in body and "id_token" not in body

    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"
    claims = await verify(http, issuer, body["access_token"])
    assert claims["iss"] == issuer.url
    assert claims["sub"] == "reporter"
    assert claims["client_id"] == "reporter"
    assert claims["aud"] == "flnet"
    assert claims["scope"] == "runs:read tools:read"
    assert claims["tenant"] == "acme"
    assert claims["roles"] == ["auditor"]
    assert before <= claims["iat"] == claims["nbf"] <= before + 5
    assert claims["exp"] == claims["iat"] + 900
    assert len(claims["jti"]) >= 16


async def test_each_token_has_its_own_jti(issuer: Issuer, http: aiohttp.ClientSession) -> None:
    first = await client_credentials(http, issuer, *REPORTER)
    second = await client_credentials(http, issuer, *REPORTER)
    a = jwt.decode(first.body["access_token"], options={"verify_signature": False})
    b = jwt.decode(second.body["access_token"], options={"verify_signature": False})
    assert a["jti"] != b["jti"]


async def test_client_secret_post_and_a_narrower_scope(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": "reporter",
        "client_secret": SECRETS["reporter"],
        "scope": "tools:read",
    }
    res = await token_request(http, issuer, form)
    assert res.status == 200, res.body
    assert res.body["scope"] == "tools:read"
    assert (await verify(http, issuer, res.body["access_token"]))["scope"] == "tools:read"


async def test_the_orchestrator_credential(issuer: Issuer, http: aiohttp.ClientSession) -> None:
    res = await client_credentials(
        http, issuer, "control-plane", SECRETS["control-plane"], "orchestrator"
    )
    assert res.status == 200, res.body
    claims = await verify(http, issuer, res.body["access_token"], audience="flnet-orchestrator")
    assert claims["scope"] == "orchestrator"
    assert claims["tenant"] == "default"
    assert claims["roles"] == []


async def test_wrong_secret_is_invalid_client_401_with_a_basic_challenge(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    res = await client_credentials(http, issuer, "reporter", "not-the-secret")
    assert res.status == 401
    assert res.body["error"] == "invalid_client"
    assert res.headers["WWW-Authenticate"].startswith("Basic")

    form = {"grant_type": "client_credentials", "client_id": "reporter", "client_secret": "x"}
    res = await token_request(http, issuer, form)
    assert (res.status, res.body["error"]) == (401, "invalid_client")


async def test_unknown_client_and_missing_authentication_are_invalid_client(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    res = await client_credentials(http, issuer, "nobody", "secret")
    assert (res.status, res.body["error"]) == (401, "invalid_client")
    res = await token_request(http, issuer, {"grant_type": "client_credentials"})
    assert (res.status, res.body["error"]) == (401, "invalid_client")
    # A confidential client must authenticate: its id alone is not enough.
    form = {"grant_type": "client_credentials", "client_id": "reporter"}
    res = await token_request(http, issuer, form)
    assert (res.status, res.body["error"]) == (401, "invalid_client")


async def test_scope_beyond_the_clients_is_invalid_scope(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    res = await client_credentials(http, issuer, *REPORTER, scope="runs:read runs:write")
    assert (res.status, res.body["error"]) == (400, "invalid_scope")
    res = await client_credentials(http, issuer, *REPORTER, scope="launch:missiles")
    assert (res.status, res.body["error"]) == (400, "invalid_scope")


async def test_unknown_or_missing_grant_type(issuer: Issuer, http: aiohttp.ClientSession) -> None:
    res = await token_request(http, issuer, {"grant_type": "password"}, REPORTER)
    assert (res.status, res.body["error"]) == (400, "unsupported_grant_type")
    res = await token_request(http, issuer, {}, REPORTER)
    assert (res.status, res.body["error"]) == (400, "invalid_request")


async def test_a_grant_the_client_may_not_use_is_unauthorized_client(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    # The public CLI client (no secret) may not use client_credentials.
    form = {"grant_type": "client_credentials", "client_id": "flnet-cli"}
    res = await token_request(http, issuer, form)
    assert (res.status, res.body["error"]) == (400, "unauthorized_client")


async def test_malformed_requests_are_invalid_request(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    # A parameter twice.
    form = aiohttp.FormData([("grant_type", "client_credentials"), ("scope", "a"), ("scope", "b")])
    headers = {"Authorization": basic_authorization(*REPORTER)}
    async with http.post(f"{issuer.url}/token", data=form, headers=headers) as res:
        assert (res.status, (await res.json())["error"]) == (400, "invalid_request")
    # JSON instead of a form.
    async with http.post(f"{issuer.url}/token", json={"grant_type": "client_credentials"}) as res:
        assert (res.status, (await res.json())["error"]) == (400, "invalid_request")
    # Two authentication methods at once.
    form2 = {"grant_type": "client_credentials", "client_secret": SECRETS["reporter"]}
    both = await token_request(http, issuer, form2, REPORTER)
    assert (both.status, both.body["error"]) == (400, "invalid_request")


async def test_tenant_claim_name_and_es256_are_configurable(
    start_issuer: StartIssuer, issuer_config: IssuerConfig, http: aiohttp.ClientSession
) -> None:
    config = replace(issuer_config, tenant_claim="org", signing_alg="ES256")
    issuer = await start_issuer(config)
    res = await client_credentials(http, issuer, *REPORTER)
    token = res.body["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = await verify(http, issuer, token, algorithms=("ES256",))
    assert claims["org"] == "acme" and "tenant" not in claims
    async with http.get(f"{issuer.url}/.well-known/openid-configuration") as r:
        doc = await r.json()
    assert "org" in doc["claims_supported"]
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
