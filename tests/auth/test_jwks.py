"""JwksClient: discovery, caching, rotation, rate-limited refetches, failures; JWKS parsing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from flnet.errors import Unavailable
from flnet.server.auth import JwksClient, KeySet, Reason
from flnet.server.auth.jwks import check_url, discovery_url, parse_jwk
from tests.auth.issuer import Issuer, IssuerKey, ManualClock


async def test_discovery_then_cached_keys(issuer: Issuer) -> None:
    clock = ManualClock()
    client = JwksClient(issuer.url, clock=clock)
    try:
        rsa_key, ec_key = issuer.keys
        assert [k.kid for k in await client.find(rsa_key.kid)] == [rsa_key.kid]
        assert [k.kid for k in await client.find(ec_key.kid)] == [ec_key.kid]
        assert len(await client.find(None)) == 2
        assert issuer.hits[f"{issuer.realm_path}/.well-known/openid-configuration"] == 1
        assert issuer.jwks_fetches == 1
        # An unknown kid within the interval: no request; after it: one.
        assert await client.find("unknown") == []
        assert issuer.jwks_fetches == 1
        clock.advance(client.min_refresh_interval)
        assert await asyncio.gather(*(client.find("unknown") for _ in range(20))) == [[]] * 20
        assert issuer.jwks_fetches == 2
        assert client.fetches == 2
    finally:
        await client.close()


async def test_rotation_and_max_age(issuer: Issuer) -> None:
    clock = ManualClock()
    client = JwksClient(issuer.url, min_refresh_interval=0.0, max_age=60.0, clock=clock)
    try:
        old = issuer.key
        assert await client.find(old.kid)
        new = issuer.rotate()
        assert await client.find(new.kid)
        assert issuer.jwks_fetches == 2
        assert await client.find(old.kid) == []  # unknown again: one more refetch, no key
        assert issuer.jwks_fetches == 3
        clock.advance(30.0)
        assert await client.find(new.kid)
        assert issuer.jwks_fetches == 3
        clock.advance(30.0)
        assert await client.find(new.kid)  # stale cache: refreshed on use
        assert issuer.jwks_fetches == 4
    finally:
        await client.close()


async def test_issuer_down_then_back(issuer: Issuer) -> None:
    clock = ManualClock()
    client = JwksClient(issuer.url, clock=clock)
    try:
        issuer.failing = True
        with pytest.raises(Unavailable) as raised:
            await client.find(issuer.key.kid)
        assert raised.value.reason == Reason.ISSUER_UNAVAILABLE
        with pytest.raises(Unavailable) as raised:
            await client.find(issuer.key.kid)
        clock.advance(4.0)
        with pytest.raises(Unavailable) as raised:
            await client.find(issuer.key.kid)
        assert raised.value.retry_after == 6.0  # the rest of the interval
        assert sum(issuer.hits.values()) == 1
        issuer.failing = False
        clock.advance(6.0)
        assert await client.find(issuer.key.kid)
        # Down again later: the cached keys stay in use.
        issuer.failing = True
        clock.advance(10.0)
        await client.refresh()
        assert sum(issuer.hits.values()) == 4  # failed, discovery + keys, failed
        assert await client.find(issuer.key.kid)
    finally:
        await client.close()


async def test_discovery_must_name_the_same_issuer(issuer: Issuer) -> None:
    # The same server under another issuer URL: its document names the real one.
    client = JwksClient(issuer.base + "/realms/other", min_refresh_interval=0.0)
    try:
        with pytest.raises(Unavailable):
            await client.find(None)
    finally:
        await client.close()
    # Unreachable: nothing listens there.
    client = JwksClient("http://127.0.0.1:9/realms/x", timeout=1.0)
    try:
        with pytest.raises(Unavailable):
            await client.refresh()
    finally:
        await client.close()


async def test_configured_jwks_uri_skips_discovery(issuer: Issuer) -> None:
    client = JwksClient(issuer.url, jwks_uri=issuer.base + issuer.jwks_path)
    try:
        assert await client.find(issuer.key.kid)
        assert sum(issuer.hits.values()) == issuer.jwks_fetches == 1
    finally:
        await client.close()


def test_urls() -> None:
    check_url("https://login.example.com/realms/flnet")
    check_url("http://127.0.0.1:8080/oidc")
    check_url("http://localhost/oidc")
    check_url("http://[::1]:8080/oidc")
    check_url("http://keycloak:8080/realms/flnet", allow_http=True)
    for url in ("http://keycloak:8080/realms/flnet", "ftp://x", "file:///etc/jwks", "https://"):
        with pytest.raises(ValueError):
            check_url(url)
    with pytest.raises(ValueError):
        JwksClient("http://issuer.example.com")
    assert discovery_url("https://i.example/r/") == (
        "https://i.example/r/.well-known/openid-configuration"
    )


def test_jwks_parsing_keeps_only_asymmetric_signature_keys() -> None:
    rsa_key, ec_key = IssuerKey.generate("RSA", "r"), IssuerKey.generate("EC", "e")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private_jwk: dict[str, Any] = {
        **RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048), as_dict=True),
        "kid": "private",
    }
    document = {
        "keys": [
            rsa_key.jwk(),
            ec_key.jwk(),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**rsa_key.jwk(), "kid": "enc", "use": "enc"},
            {**rsa_key.jwk(), "kid": "hs", "alg": "HS256"},
            {**RSAAlgorithm.to_jwk(small.public_key(), as_dict=True), "kid": "small"},
            {"kty": "RSA", "kid": "broken", "n": "AA", "e": "AQAB"},
            private_jwk,
            "not a key",
        ]
    }
    keys = KeySet.from_document(document)
    assert keys.kids == ["r", "e", "private"]
    private = parse_jwk(private_jwk)
    assert private is not None and isinstance(private.key, rsa.RSAPublicKey)
    for bad in ({}, {"keys": "x"}, [1]):
        with pytest.raises(ValueError):
            KeySet.from_document(bad)
