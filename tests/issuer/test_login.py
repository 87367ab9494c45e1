"""`flnet login`: a real `flnet` process against a real issuer. The authorization-code login
is driven the way a script drives it: read the URL from stderr, post the login form, follow
the redirect to the command's loopback listener."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flnet import timeouts
from flnet.cli.login import (
    LoginRequired,
    access_token,
    browser_login,
    client_credentials_login,
    credentials_path,
    load_credentials,
    resolve_issuer,
    save_credentials,
)
from flnet.issuer import Issuer
from flnet.oauth import LoginError
from tests.issuer.conftest import PASSWORDS, SECRETS
from tests.issuer.helpers import csrf_token, refresh, verify

FLNET = [sys.executable, "-m", "flnet.cli.main"]


async def flnet(
    data: Path, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *FLNET,
        "--data-dir",
        str(data),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await timeouts.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def sign_in(http: aiohttp.ClientSession, url: str, username: str) -> str:
    """The browser: the login page, the form, then the redirect to the CLI's listener."""
    async with http.get(url) as res:
        assert res.status == 200
        page = await res.text()
        action = str(res.url.with_query(None))
    form = {"csrf_token": csrf_token(page), "username": username, "password": PASSWORDS[username]}
    async with http.post(action, data=form, allow_redirects=False) as res:
        assert res.status == 302, await res.text()
        location = res.headers["Location"]
    async with http.get(location) as res:  # the loopback listener of `flnet login`
        assert res.status == 200
        return await res.text()


def assert_private_cache(data: Path) -> dict[str, Any]:
    path = credentials_path(data)
    assert path.stat().st_mode & 0o777 == 0o600
    cached: dict[str, Any] = json.loads(path.read_text())
    return cached


async def test_client_credentials_login_writes_a_private_cache(
    issuer: Issuer, tmp_path: Path
) -> None:
    data = tmp_path / "cli"
    proc = await flnet(
        data,
        "-o",
        "json",
        "login",
        "--issuer",
        issuer.url,
        "--client-credentials",
        "--client-id",
        "reporter",
        "--client-secret",
        SECRETS["reporter"],
    )
    code, out, err = await finish(proc)
    assert code == 0, err
    cached = assert_private_cache(data)
    assert cached["grant_type"] == "client_credentials"
    assert cached["client_id"] == "reporter"
    assert cached["issuer"] == issuer.url
    assert cached["refresh_token"] is None
    shown = json.loads(out)
    assert shown["subject"] == "reporter" and shown["tenant"] == "acme"
    assert shown["scope"] == "runs:read tools:read"
    assert cached["access_token"] not in out + err  # never printed


async def test_a_failed_login_writes_nothing(issuer: Issuer, tmp_path: Path) -> None:
    data = tmp_path / "cli"
    proc = await flnet(
        data,
        "login",
        "--issuer",
        issuer.url,
        "--client-credentials",
        "--client-id",
        "reporter",
        "--client-secret",
        "wrong",
    )
    code, out, err = await finish(proc)
    assert code == 2 and out == ""
    assert "invalid_client" in err
    assert not credentials_path(data).exists()


async def test_browser_login_driven_by_a_script(
    issuer: Issuer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = tmp_path / "cli"
    proc = await flnet(
        data,
        "-o",
        "json",
        "login",
        "--issuer",
        issuer.url,
        "--no-browser",
        "--scope",
        "openid runs:read runs:write",
    )
    assert proc.stderr is not None
    url = ""
    while not url.startswith("http"):
        line = await timeouts.wait_for(proc.stderr.readline(), 30)
        assert line, "flnet login printed no URL"
        url = line.decode().strip()
    assert url.startswith(f"{issuer.url}/authorize?")
    assert "code_challenge_method=S256" in url
    page = await sign_in(http, url, "alice")
    assert "Signed in" in page
    code, out, err = await finish(proc)
    assert code == 0, err
    cached = assert_private_cache(data)
    assert cached["grant_type"] == "authorization_code"
    assert cached["refresh_token"]
    assert cached["scope"] == "openid runs:read runs:write"
    claims = await verify(http, issuer, cached["access_token"])
    assert (claims["sub"], claims["tenant"], claims["client_id"]) == ("alice", "acme", "flnet-cli")
    assert json.loads(out)["subject"] == "alice"
    assert cached["access_token"] not in out + err
    assert cached["refresh_token"] not in out + err


async def test_an_expired_token_is_refreshed_with_rotation(
    issuer: Issuer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = tmp_path / "cli"

    browsers: list[asyncio.Task[str]] = []

    async def browser(url: str) -> None:
        browsers.append(asyncio.create_task(sign_in(http, url, "audrey")))

    credentials = await browser_login(issuer.url, browser, scope="runs:read", sign_in_within=30)
    assert "Signed in" in await browsers[0]
    save_credentials(data, credentials)
    assert await access_token(data) == credentials.access_token  # fresh: from the cache

    cached = assert_private_cache(data)
    cached["expires_at"] = 0
    credentials_path(data).write_text(json.dumps(cached))
    token = await access_token(data)
    assert token != credentials.access_token
    renewed = load_credentials(data)
    assert renewed is not None and renewed.access_token == token
    assert renewed.refresh_token not in (None, credentials.refresh_token)
    assert assert_private_cache(data)["expires_at"] > 0
    assert (await verify(http, issuer, token))["sub"] == "audrey"
    # The first refresh token was used up by the refresh: reusing it is refused.
    assert credentials.refresh_token is not None
    reuse = await refresh(http, issuer, credentials.refresh_token)
    assert reuse.body["error"] == "invalid_grant"
    # ... and revoked the family: the cache cannot refresh any more.
    cached = assert_private_cache(data)
    cached["expires_at"] = 0
    credentials_path(data).write_text(json.dumps(cached))
    with pytest.raises(LoginRequired):
        await access_token(data)


async def test_an_error_redirect_ends_the_login_with_that_error(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    async def browser(url: str) -> None:
        async with http.get(url) as res:  # the issuer redirects straight to the listener
            assert res.status == 400
            assert "invalid_scope" in await res.text()

    with pytest.raises(LoginError, match="invalid_scope"):
        await browser_login(issuer.url, browser, scope="orchestrator", sign_in_within=30)


async def test_status_refreshes_an_expired_cache(issuer: Issuer, tmp_path: Path) -> None:
    data = tmp_path / "cli"
    credentials = await client_credentials_login(issuer.url, "reporter", SECRETS["reporter"])
    save_credentials(data, credentials)
    cached = assert_private_cache(data)
    cached["expires_at"] = 0
    credentials_path(data).write_text(json.dumps(cached))

    code, out, err = await finish(await flnet(data, "-o", "json", "login", "--status"))
    assert code == 2 and out == ""  # errors on stderr; no refresh token, no secret: log in again
    assert "flnet login" in json.loads(err)["error"]["message"]

    env = {**os.environ, "FLNET_CLIENT_SECRET": SECRETS["reporter"]}
    code, out, err = await finish(await flnet(data, "-o", "json", "login", "--status", env=env))
    assert code == 0, out + err
    assert json.loads(out)["subject"] == "reporter"
    assert assert_private_cache(data)["access_token"] != credentials.access_token


async def test_no_cache_means_login_required(tmp_path: Path) -> None:
    with pytest.raises(LoginRequired):
        await access_token(tmp_path)


def test_the_issuer_comes_from_the_flag_the_environment_or_the_running_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLNET_OIDC_ISSUER", raising=False)
    with pytest.raises(LoginError, match="no issuer"):
        resolve_issuer(None, tmp_path)
    (tmp_path / "endpoints.json").write_text(json.dumps({"oidc": "http://127.0.0.1:1/"}))
    assert resolve_issuer(None, tmp_path) == "http://127.0.0.1:1"
    monkeypatch.setenv("FLNET_OIDC_ISSUER", "http://127.0.0.1:2")
    assert resolve_issuer(None, tmp_path) == "http://127.0.0.1:2"
    assert resolve_issuer("http://127.0.0.1:3", tmp_path) == "http://127.0.0.1:3"
