"""Roles map to scopes by configuration: a user's token holds at most what the roles grant."""

from __future__ import annotations

import aiohttp

from flnet.issuer import Issuer
from tests.issuer.conftest import PASSWORDS
from tests.issuer.helpers import scopes, user_tokens, verify

EVERYTHING = "runs:read runs:write tools:read tools:write artifacts:read admin"


async def test_an_auditor_gets_read_scopes_only(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    body = await user_tokens(http, issuer, "audrey", PASSWORDS["audrey"], scope=EVERYTHING)
    assert scopes(body) == {"runs:read", "tools:read", "artifacts:read"}
    claims = await verify(http, issuer, body["access_token"])
    assert set(claims["scope"].split()) == {"runs:read", "tools:read", "artifacts:read"}
    assert claims["roles"] == ["auditor"]
    assert claims["tenant"] == "acme"


async def test_a_data_scientist_reads_and_writes_but_is_no_admin(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    body = await user_tokens(http, issuer, "alice", PASSWORDS["alice"], scope=EVERYTHING)
    assert scopes(body) == set(EVERYTHING.split()) - {"admin"}


async def test_an_admin_gets_admin(issuer: Issuer, http: aiohttp.ClientSession) -> None:
    body = await user_tokens(http, issuer, "admin", PASSWORDS["admin"], scope=EVERYTHING)
    assert scopes(body) == set(EVERYTHING.split())
    claims = await verify(http, issuer, body["access_token"])
    assert claims["tenant"] == "default"
    assert claims["roles"] == ["admin"]


async def test_openid_scopes_need_no_role(issuer: Issuer, http: aiohttp.ClientSession) -> None:
    body = await user_tokens(http, issuer, "audrey", PASSWORDS["audrey"], scope="openid runs:write")
    assert body["scope"] == "openid"
    assert "id_token" in body
