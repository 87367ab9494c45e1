"""No secret reaches a log, and the runtime stays independent of the issuer."""

from __future__ import annotations

import logging
import subprocess
import sys

import aiohttp
import pytest

from flnet.issuer import Issuer
from tests.issuer.conftest import PASSWORDS, SECRETS
from tests.issuer.helpers import (
    authorize,
    client_credentials,
    exchange,
    refresh,
    submit_login,
)


async def test_tokens_codes_and_secrets_are_never_logged(
    issuer: Issuer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = [*PASSWORDS.values(), *SECRETS.values()]

    cc = await client_credentials(http, issuer, "reporter", SECRETS["reporter"])
    await client_credentials(http, issuer, "reporter", "wrong-secret-value")
    secrets += [cc.body["access_token"], "wrong-secret-value"]

    flow = await authorize(http, issuer, "alice", PASSWORDS["alice"], scope="openid runs:read")
    tokens = await exchange(http, issuer, flow)
    renewed = await refresh(http, issuer, tokens.body["refresh_token"])
    reused = await refresh(http, issuer, tokens.body["refresh_token"])  # logged as a warning
    assert reused.status == 400
    again = await exchange(http, issuer, flow)  # a reused code, logged as a warning
    assert again.status == 400
    await submit_login(http, issuer, "forged-nonce", "alice", "bad-password-value")
    headers = {"Authorization": f"Bearer {tokens.body['access_token']}"}
    async with http.get(f"{issuer.url}/userinfo", headers=headers) as res:
        assert res.status == 200
    secrets += [flow.code, flow.verifier, "bad-password-value"]
    secrets += [tokens.body[k] for k in ("access_token", "refresh_token", "id_token")]
    secrets += [renewed.body[k] for k in ("access_token", "refresh_token")]

    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "POST /token" in logged and "GET /authorize" in logged  # the access log is on
    assert "refresh token reused" in logged and "authorization code reused" in logged
    for secret in secrets:
        assert secret not in logged


def test_the_runtime_does_not_import_the_issuer() -> None:
    code = (
        "import sys, flnet.runtime; "
        "bad = [m for m in sys.modules if m.startswith(('flnet.issuer', 'aiohttp', 'joserfc'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
