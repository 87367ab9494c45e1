"""Signing keys: rotation keeps old tokens verifiable, keys persist across restarts, and a
rotation by another process reaches the running issuer."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace

import aiohttp
import jwt

from flnet.issuer import Issuer, IssuerConfig
from tests.issuer.conftest import SECRETS, Clock, StartIssuer
from tests.issuer.helpers import client_credentials, jwks, verify

REPORTER = ("reporter", SECRETS["reporter"])


async def kids(http: aiohttp.ClientSession, issuer: Issuer) -> list[str]:
    return [k["kid"] for k in (await jwks(http, issuer))["keys"]]


async def test_rotation_keeps_old_tokens_verifiable_and_signs_with_the_new_key(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    old_token = (await client_credentials(http, issuer, *REPORTER)).body["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    new_kid = issuer.rotate_keys()
    assert new_kid != old_kid
    assert await kids(http, issuer) == [new_kid, old_kid]  # the signing key first

    new_token = (await client_credentials(http, issuer, *REPORTER)).body["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert (await verify(http, issuer, old_token))["sub"] == "reporter"
    assert (await verify(http, issuer, new_token))["sub"] == "reporter"


async def test_a_retired_key_is_unpublished_once_its_tokens_expired(
    issuer: Issuer, http: aiohttp.ClientSession, clock: Clock
) -> None:
    (old_kid,) = await kids(http, issuer)
    new_kid = issuer.rotate_keys()
    clock.advance(900)  # the access token lifetime: tokens of the old key may still be valid
    assert await kids(http, issuer) == [new_kid, old_kid]
    clock.advance(31)  # ... plus the clock skew: none is
    assert await kids(http, issuer) == [new_kid]
    newest = issuer.rotate_keys()  # rotation deletes keys nobody can need
    assert await kids(http, issuer) == [newest, new_kid]
    keys_dir = issuer.directory / "keys"
    assert sorted(p.stem for p in keys_dir.glob("*.pem")) == sorted([newest, new_kid])


async def test_keys_survive_a_restart_and_are_private(
    start_issuer: StartIssuer, http: aiohttp.ClientSession
) -> None:
    issuer = await start_issuer()
    token = (await client_credentials(http, issuer, *REPORTER)).body["access_token"]
    before = await jwks(http, issuer)
    await issuer.stop()

    restarted = await start_issuer()
    assert await jwks(http, restarted) == before
    again = (await client_credentials(http, restarted, *REPORTER)).body["access_token"]
    assert jwt.get_unverified_header(again)["kid"] == jwt.get_unverified_header(token)["kid"]

    keys_dir = restarted.directory / "keys"
    assert keys_dir.stat().st_mode & 0o777 == 0o700
    pems = list(keys_dir.glob("*.pem"))
    assert len(pems) == 1
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in pems)
    assert (keys_dir / "keys.json").stat().st_mode & 0o777 == 0o600


async def test_a_rotation_by_another_process_reaches_the_running_issuer(
    issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    (old_kid,) = await kids(http, issuer)
    data_dir = issuer.directory.parent
    config = issuer.directory / "test.yaml"
    config.write_text(json.dumps({"tenants": ["default"]}))  # JSON is YAML
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flnet.issuer",
        "--data-dir",
        str(data_dir),
        "--config",
        str(config),
        "--rotate-keys",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    new_kid = out.decode().strip()
    assert await kids(http, issuer) == [new_kid, old_kid]
    token = (await client_credentials(http, issuer, *REPORTER)).body["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == new_kid


async def test_changing_the_algorithm_rotates_to_a_key_of_it(
    start_issuer: StartIssuer, issuer_config: IssuerConfig, http: aiohttp.ClientSession
) -> None:
    issuer = await start_issuer()
    rsa_token = (await client_credentials(http, issuer, *REPORTER)).body["access_token"]
    await issuer.stop()
    issuer = await start_issuer(replace(issuer_config, signing_alg="ES256"))
    keys = (await jwks(http, issuer))["keys"]
    assert [k["kty"] for k in keys] == ["EC", "RSA"]
    es_token = (await client_credentials(http, issuer, *REPORTER)).body["access_token"]
    assert jwt.get_unverified_header(es_token)["alg"] == "ES256"
    await verify(http, issuer, es_token, algorithms=("ES256",))
    # The RSA token was issued under the old URL; its signature still checks out.
    decoded = jwt.decode(
        rsa_token,
        jwt.PyJWKSet.from_dict({"keys": [keys[1]]}).keys[0].key,
        algorithms=["RS256"],
        options={"verify_aud": False, "verify_iss": False},
    )
    assert decoded["sub"] == "reporter"
