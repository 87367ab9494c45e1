"""What a client does against the issuer, over real HTTP: token requests, the authorization
code flow driven like a browser (GET /authorize, POST the login form, read the redirect),
and token verification with pyjwt against the served JWKS."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt

from flnet.issuer import Issuer
from flnet.oauth import basic_authorization

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


async def token_request(
    http: aiohttp.ClientSession,
    issuer: Issuer,
    form: dict[str, str],
    auth: tuple[str, str] | None = None,
) -> Response:
    headers = {"Authorization": basic_authorization(*auth)} if auth else {}
    async with http.post(f"{issuer.url}/token", data=form, headers=headers) as res:
        return Response(res.status, await res.json(), dict(res.headers))


async def client_credentials(
    http: aiohttp.ClientSession, issuer: Issuer, client_id: str, secret: str, scope: str = ""
) -> Response:
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    return await token_request(http, issuer, form, (client_id, secret))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def csrf_token(page: str) -> str:
    match = _CSRF.search(page)
    assert match, page
    return match.group(1)


async def login_page(
    http: aiohttp.ClientSession, issuer: Issuer, params: dict[str, str]
) -> tuple[int, str, dict[str, str]]:
    """GET /authorize without following redirects: (status, body or Location, headers)."""
    async with http.get(f"{issuer.url}/authorize", params=params, allow_redirects=False) as res:
        body = res.headers.get("Location", "") if res.status == 302 else await res.text()
        return res.status, body, dict(res.headers)


async def submit_login(
    http: aiohttp.ClientSession, issuer: Issuer, csrf: str, username: str, password: str
) -> tuple[int, str]:
    """POST the login form: (status, Location on a redirect, else the page)."""
    form = {"csrf_token": csrf, "username": username, "password": password}
    async with http.post(f"{issuer.url}/authorize", data=form, allow_redirects=False) as res:
        return res.status, res.headers.get(
            "Location", ""
        ) if res.status == 302 else await res.text()


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class CodeFlow:
    """One authorization request and its outcome."""

    code: str
    verifier: str
    redirect_uri: str
    location: str


async def authorize(
    http: aiohttp.ClientSession,
    issuer: Issuer,
    username: str,
    password: str,
    *,
    client_id: str = "flnet-cli",
    redirect_uri: str = "http://127.0.0.1:45678/callback",
    scope: str | None = None,
    nonce: str | None = None,
) -> CodeFlow:
    """The browser's part: the login page, the form, the redirect carrying the code."""
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(8)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if scope is not None:
        params["scope"] = scope
    if nonce is not None:
        params["nonce"] = nonce
    status, page, _ = await login_page(http, issuer, params)
    assert status == 200, page
    status, location = await submit_login(http, issuer, csrf_token(page), username, password)
    assert status == 302, location
    assert location.startswith(redirect_uri)
    query = query_of(location)
    assert query["state"] == state
    assert query["iss"] == issuer.url
    return CodeFlow(query["code"], verifier, redirect_uri, location)


async def exchange(
    http: aiohttp.ClientSession,
    issuer: Issuer,
    flow: CodeFlow,
    *,
    client_id: str = "flnet-cli",
    verifier: str | None = None,
    redirect_uri: str | None = None,
    auth: tuple[str, str] | None = None,
) -> Response:
    form = {
        "grant_type": "authorization_code",
        "code": flow.code,
        "redirect_uri": redirect_uri or flow.redirect_uri,
        "code_verifier": verifier or flow.verifier,
    }
    if auth is None:
        form["client_id"] = client_id
    return await token_request(http, issuer, form, auth)


async def user_tokens(
    http: aiohttp.ClientSession, issuer: Issuer, username: str, password: str, **kwargs: Any
) -> dict[str, Any]:
    """The whole flow for the CLI client: the token response."""
    flow = await authorize(http, issuer, username, password, **kwargs)
    res = await exchange(http, issuer, flow)
    assert res.status == 200, res.body
    return res.body


async def refresh(
    http: aiohttp.ClientSession,
    issuer: Issuer,
    token: str,
    client_id: str = "flnet-cli",
    **extra: str,
) -> Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id, **extra}
    return await token_request(http, issuer, form)


async def jwks(http: aiohttp.ClientSession, issuer: Issuer) -> dict[str, Any]:
    async with http.get(f"{issuer.url}/jwks") as res:
        assert res.status == 200
        data: dict[str, Any] = await res.json()
        return data


async def verify(
    http: aiohttp.ClientSession,
    issuer: Issuer,
    token: str,
    audience: str = "flnet",
    algorithms: tuple[str, ...] = ("RS256",),
    require: tuple[str, ...] = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti"),
) -> dict[str, Any]:
    """pyjwt's verification against the served JWKS: signature, alg, iss, aud, exp, nbf, iat."""
    header = jwt.get_unverified_header(token)
    key_set = jwt.PyJWKSet.from_dict(await jwks(http, issuer))
    key = next(k for k in key_set.keys if k.key_id == header["kid"])
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=list(algorithms),
        audience=audience,
        issuer=issuer.url,
        options={"require": list(require)},
    )
    return claims


def scopes(token_response: dict[str, Any]) -> set[str]:
    return set(str(token_response["scope"]).split())
