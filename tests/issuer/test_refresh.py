"""Refresh tokens: every use rotates them; a reused one revokes the whole family."""

from __future__ import annotations

import aiohttp

from flnet.issuer import Issuer
from tests.issuer.conftest import PASSWORDS, SECRETS, StartIssuer
from tests.issuer.helpers import refresh, token_request, user_tokens, verify


async def test_a_refresh_returns_new_tokens_and_a_new_refresh_token(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    first = await user_tokens(http, issuer, "alice", PASSWORDS["alice"], scope="runs:read")
    res = await refresh(http, issuer, first["refresh_token"])
    assert res.status == 200, res.body
    assert res.body["refresh_token"] != first["refresh_token"]
    assert res.body["access_token"] != first["access_token"]
    assert res.body["scope"] == "runs:read"
    claims = await verify(http, issuer, res.body["access_token"])
    assert (claims["sub"], claims["tenant"]) == ("alice", "acme")
    # The new one works in turn.
    res2 = await refresh(http, issuer, res.body["refresh_token"])
    assert res2.status == 200, res2.body


async def test_reusing_a_refresh_token_revokes_the_family(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    first = await user_tokens(http, issuer, "alice", PASSWORDS["alice"])
    second = await refresh(http, issuer, first["refresh_token"])
    assert second.status == 200
    reuse = await refresh(http, issuer, first["refresh_token"])
    assert (reuse.status, reuse.body["error"]) == (400, "invalid_grant")
    # The legitimate newest token died with the family.
    after = await refresh(http, issuer, second.body["refresh_token"])
    assert (after.status, after.body["error"]) == (400, "invalid_grant")
    # Another login starts a new, independent family.
    other = await user_tokens(http, issuer, "alice", PASSWORDS["alice"])
    assert (await refresh(http, issuer, other["refresh_token"])).status == 200


async def test_a_refresh_may_narrow_but_not_widen_the_scope(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    body = await user_tokens(
        http, issuer, "alice", PASSWORDS["alice"], scope="runs:read runs:write"
    )
    res = await refresh(http, issuer, body["refresh_token"], scope="runs:read")
    assert (res.status, res.body["scope"]) == (200, "runs:read")
    # The rotated token keeps the original grant.
    res = await refresh(http, issuer, res.body["refresh_token"])
    assert (res.status, res.body["scope"]) == (200, "runs:read runs:write")
    res = await refresh(http, issuer, res.body["refresh_token"], scope="runs:read tools:write")
    assert (res.status, res.body["error"]) == (400, "invalid_scope")


async def test_a_refresh_token_belongs_to_its_client(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    body = await user_tokens(http, issuer, "alice", PASSWORDS["alice"])
    form = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    res = await token_request(http, issuer, form, ("web", SECRETS["web"]))
    assert (res.status, res.body["error"]) == (400, "invalid_grant")
    res = await refresh(http, issuer, body["refresh_token"], client_id="web")
    assert (res.status, res.body["error"]) == (401, "invalid_client")  # web must authenticate
    assert (await refresh(http, issuer, body["refresh_token"])).status == 200  # still alice's
    res = await refresh(http, issuer, "not-a-token")
    assert (res.status, res.body["error"]) == (400, "invalid_grant")


async def test_refresh_tokens_survive_a_restart(
    start_issuer: StartIssuer, http: aiohttp.ClientSession
) -> None:
    issuer = await start_issuer()
    body = await user_tokens(http, issuer, "alice", PASSWORDS["alice"])
    await issuer.stop()
    restarted = await start_issuer()
    res = await refresh(http, restarted, body["refresh_token"])
    assert res.status == 200, res.body
    stored = restarted.directory / "refresh-tokens.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert body["refresh_token"] not in stored.read_text()  # only digests are stored
