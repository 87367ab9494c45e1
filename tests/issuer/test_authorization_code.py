"""Authorization code + PKCE (S256), driven like a browser: GET /authorize, POST the login
form, follow the redirect's code to POST /token."""

from __future__ import annotations

import aiohttp
import jwt

from flnet.issuer import Issuer
from tests.issuer.conftest import PASSWORDS, SECRETS, WEB_REDIRECT, Clock
from tests.issuer.helpers import (
    authorize,
    csrf_token,
    exchange,
    login_page,
    pkce,
    query_of,
    refresh,
    submit_login,
    user_tokens,
    verify,
)


def params(**overrides: str) -> dict[str, str]:
    _, challenge = pkce()
    base = {
        "response_type": "code",
        "client_id": "flnet-cli",
        "redirect_uri": "http://127.0.0.1:40000/callback",
        "state": "xyz",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return {**base, **overrides}


async def test_full_flow_issues_access_refresh_and_id_tokens(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    flow = await authorize(
        http,
        issuer,
        "alice",
        PASSWORDS["alice"],
        scope="openid profile email runs:read",
        nonce="n-0S6",
    )
    res = await exchange(http, issuer, flow)
    assert res.status == 200, res.body
    body = res.body
    assert body["scope"] == "openid profile email runs:read"
    assert body["refresh_token"]

    claims = await verify(http, issuer, body["access_token"])
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"
    assert claims["sub"] == "alice"
    assert claims["client_id"] == "flnet-cli"
    assert claims["tenant"] == "acme"
    assert claims["roles"] == ["data-scientist"]
    assert claims["scope"] == "openid profile email runs:read"
    assert claims["auth_time"] <= claims["iat"]

    id_token = await verify(
        http, issuer, body["id_token"], audience="flnet-cli", require=("exp", "iat", "sub")
    )
    assert jwt.get_unverified_header(body["id_token"])["typ"] == "JWT"
    assert id_token["nonce"] == "n-0S6"
    assert id_token["sub"] == "alice"
    assert id_token["name"] == "Alice Liddell"
    assert id_token["email"] == "alice@acme.example"

    headers = {"Authorization": f"Bearer {body['access_token']}"}
    async with http.get(f"{issuer.url}/userinfo", headers=headers) as r:
        assert r.status == 200
        info = await r.json()
    assert info == {
        "sub": "alice",
        "tenant": "acme",
        "roles": ["data-scientist"],
        "preferred_username": "alice",
        "name": "Alice Liddell",
        "email": "alice@acme.example",
    }
    async with http.get(f"{issuer.url}/userinfo", headers={"Authorization": "Bearer x"}) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_confidential_client_authenticates_at_the_token_endpoint(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    # A registered redirect URI with a query matches exactly and keeps its query.
    flow = await authorize(
        http, issuer, "alice", PASSWORDS["alice"], client_id="web", redirect_uri=WEB_REDIRECT
    )
    assert flow.location.startswith(WEB_REDIRECT + "&code=")
    res = await exchange(http, issuer, flow, client_id="web")
    assert (res.status, res.body["error"]) == (401, "invalid_client")  # no secret: refused
    flow = await authorize(
        http, issuer, "alice", PASSWORDS["alice"], client_id="web", redirect_uri=WEB_REDIRECT
    )
    res = await exchange(http, issuer, flow, auth=("web", SECRETS["web"]))
    assert res.status == 200, res.body
    assert res.body["scope"] == "openid runs:read"
    assert res.body["refresh_token"]


async def test_wrong_code_verifier_is_invalid_grant(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    flow = await authorize(http, issuer, "alice", PASSWORDS["alice"])
    other_verifier, _ = pkce()
    res = await exchange(http, issuer, flow, verifier=other_verifier)
    assert (res.status, res.body["error"]) == (400, "invalid_grant")
    # The code is spent by the failed attempt: no second guess.
    res = await exchange(http, issuer, flow)
    assert (res.status, res.body["error"]) == (400, "invalid_grant")


async def test_a_missing_verifier_is_invalid_grant(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    flow = await authorize(http, issuer, "alice", PASSWORDS["alice"])
    form = {
        "grant_type": "authorization_code",
        "code": flow.code,
        "redirect_uri": flow.redirect_uri,
        "client_id": "flnet-cli",
    }
    async with http.post(f"{issuer.url}/token", data=form) as r:
        assert (r.status, (await r.json())["error"]) == (400, "invalid_grant")


async def test_a_reused_code_is_invalid_grant_and_revokes_its_refresh_token(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    flow = await authorize(http, issuer, "alice", PASSWORDS["alice"])
    first = await exchange(http, issuer, flow)
    assert first.status == 200
    again = await exchange(http, issuer, flow)
    assert (again.status, again.body["error"]) == (400, "invalid_grant")
    res = await refresh(http, issuer, first.body["refresh_token"])
    assert (res.status, res.body["error"]) == (400, "invalid_grant")


async def test_a_different_redirect_uri_at_the_token_endpoint_is_invalid_grant(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    flow = await authorize(http, issuer, "alice", PASSWORDS["alice"])
    res = await exchange(http, issuer, flow, redirect_uri="http://127.0.0.1:40001/callback")
    assert (res.status, res.body["error"]) == (400, "invalid_grant")


async def test_a_code_is_bound_to_its_client(issuer: Issuer, http: aiohttp.ClientSession) -> None:
    flow = await authorize(
        http, issuer, "alice", PASSWORDS["alice"], client_id="web", redirect_uri=WEB_REDIRECT
    )
    res = await exchange(http, issuer, flow, client_id="flnet-cli")
    assert (res.status, res.body["error"]) == (400, "invalid_grant")


async def test_codes_expire(issuer: Issuer, http: aiohttp.ClientSession, clock: Clock) -> None:
    flow = await authorize(http, issuer, "alice", PASSWORDS["alice"])
    clock.advance(61)  # authorization_code_ttl is 60 s
    res = await exchange(http, issuer, flow)
    assert (res.status, res.body["error"]) == (400, "invalid_grant")


async def test_untrusted_client_or_redirect_uri_is_an_error_page_never_a_redirect(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    for bad in (
        params(redirect_uri="https://evil.example/callback"),
        params(redirect_uri="http://127.0.0.1:40000/other"),  # another path
        params(redirect_uri="http://localhost:40000/callback"),  # only IP literals are loopback
        params(client_id="web", redirect_uri=WEB_REDIRECT + "&x=1"),  # exact match
        params(client_id="nobody"),
        {k: v for k, v in params().items() if k != "redirect_uri"},
    ):
        status, page, _ = await login_page(http, issuer, bad)
        assert status == 400, bad
        assert "Cannot sign in" in page


async def test_invalid_requests_are_redirected_with_error_and_state(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    cases = {
        "invalid_request": params(code_challenge_method="plain"),
        "unsupported_response_type": params(response_type="token"),
        "invalid_scope": params(scope="openid orchestrator"),  # not the CLI's to ask
        "login_required": params(prompt="none"),  # no SSO session to reuse
    }
    no_pkce = {k: v for k, v in params().items() if not k.startswith("code_challenge")}
    for expected, request in [*cases.items(), ("invalid_request", no_pkce)]:
        status, location, _ = await login_page(http, issuer, request)
        assert status == 302, (expected, location)
        query = query_of(location)
        assert location.startswith("http://127.0.0.1:40000/callback?")
        assert query["error"] == expected
        assert query["state"] == "xyz"
        assert query["iss"] == issuer.url
    status, location, _ = await login_page(
        http, issuer, params(client_id="control-plane", redirect_uri="http://127.0.0.1/x")
    )
    assert status == 400  # a client without redirect URIs has nothing to redirect to


async def test_the_login_page_is_hardened(issuer: Issuer, http: aiohttp.ClientSession) -> None:
    status, page, headers = await login_page(http, issuer, params(scope="openid runs:read"))
    assert status == 200
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    assert "<script" not in page
    assert 'name="username"' in page and 'name="password"' in page
    assert "openid runs:read" in page


async def test_wrong_password_shows_the_form_again_under_a_new_nonce(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    _, page, _ = await login_page(http, issuer, params())
    first = csrf_token(page)
    status, page = await submit_login(http, issuer, first, "alice", "wrong")
    assert status == 401
    assert "Wrong user name or password" in page
    second = csrf_token(page)
    assert second != first
    # Unknown users get the same answer.
    status, page = await submit_login(http, issuer, second, "mallory", "x")
    assert status == 401
    third = csrf_token(page)
    status, location = await submit_login(http, issuer, third, "alice", PASSWORDS["alice"])
    assert status == 302
    assert query_of(location)["state"] == "xyz"


async def test_a_login_nonce_is_single_use_and_required(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    _, page, _ = await login_page(http, issuer, params())
    nonce = csrf_token(page)
    status, _ = await submit_login(http, issuer, nonce, "alice", PASSWORDS["alice"])
    assert status == 302
    status, page = await submit_login(http, issuer, nonce, "alice", PASSWORDS["alice"])
    assert status == 400 and "expired" in page
    status, page = await submit_login(http, issuer, "forged", "alice", PASSWORDS["alice"])
    assert status == 400


async def test_login_pages_expire(
    issuer: Issuer, http: aiohttp.ClientSession, clock: Clock
) -> None:
    _, page, _ = await login_page(http, issuer, params())
    clock.advance(601)  # login_ttl is 600 s
    status, _ = await submit_login(http, issuer, csrf_token(page), "alice", PASSWORDS["alice"])
    assert status == 400


async def test_default_scope_is_all_the_client_may_ask_within_the_users_roles(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    body = await user_tokens(http, issuer, "admin", PASSWORDS["admin"])
    assert body["scope"] == (
        "openid profile email runs:read runs:write tools:read tools:write artifacts:read admin"
    )
