"""Fixtures of the issuer tests: a real Issuer on 127.0.0.1:0 in the test's loop, talked to
over HTTP with aiohttp, tokens verified with pyjwt against the served JWKS."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flnet.issuer import Issuer, IssuerConfig, hash_secret, parse_config

PASSWORDS = {
    "admin": "admin-password",
    "alice": "alice-password",
    "audrey": "audrey-password",
}
SECRETS = {
    "control-plane": "control-plane-secret",
    "reporter": "reporter-secret",
    "web": "web-secret",
}
CLI_REDIRECT = "http://127.0.0.1/callback"
WEB_REDIRECT = "https://app.example/cb?tab=1"


class Clock:
    """Real time plus an offset the test may advance (expiry without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def config_data(hashes: dict[str, str]) -> dict[str, Any]:
    """A configuration with two tenants, the three default roles, a user per role, the CLI
    (public), a confidential web app and two service clients."""
    return {
        "tenants": ["default", "acme"],
        "roles": {
            "admin": [
                "runs:read",
                "runs:write",
                "tools:read",
                "tools:write",
                "artifacts:read",
                "admin",
            ],
            "data-scientist": [
                "runs:read",
                "runs:write",
                "tools:read",
                "tools:write",
                "artifacts:read",
            ],
            "auditor": ["runs:read", "tools:read", "artifacts:read"],
        },
        "users": {
            "admin": {"password_hash": hashes["admin"], "tenant": "default", "roles": ["admin"]},
            "alice": {
                "password_hash": hashes["alice"],
                "tenant": "acme",
                "roles": ["data-scientist"],
                "name": "Alice Liddell",
                "email": "alice@acme.example",
            },
            "audrey": {"password_hash": hashes["audrey"], "tenant": "acme", "roles": ["auditor"]},
        },
        "clients": {
            "flnet-cli": {
                "redirect_uris": [CLI_REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "scopes": [
                    "openid",
                    "profile",
                    "email",
                    "runs:read",
                    "runs:write",
                    "tools:read",
                    "tools:write",
                    "artifacts:read",
                    "admin",
                ],
            },
            "web": {
                "secret_hash": hashes["web"],
                "redirect_uris": [WEB_REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "scopes": ["openid", "runs:read"],
            },
            "control-plane": {
                "secret_hash": hashes["control-plane"],
                "grant_types": ["client_credentials"],
                "scopes": ["orchestrator"],
                "tenant": "default",
                "audience": "flnet-orchestrator",
            },
            "reporter": {
                "secret_hash": hashes["reporter"],
                "grant_types": ["client_credentials"],
                "scopes": ["runs:read", "tools:read"],
                "tenant": "acme",
                "roles": ["auditor"],
            },
        },
    }


@pytest.fixture(scope="session")
def hashes() -> dict[str, str]:
    """scrypt is slow on purpose: hash the test secrets once per session."""
    return {name: hash_secret(secret) for name, secret in {**PASSWORDS, **SECRETS}.items()}


@pytest.fixture(scope="session")
def issuer_config(hashes: dict[str, str]) -> IssuerConfig:
    return parse_config(config_data(hashes))


@pytest.fixture
def clock() -> Clock:
    return Clock()


StartIssuer = Callable[..., Awaitable[Issuer]]


@pytest.fixture
async def start_issuer(
    tmp_path: Path, issuer_config: IssuerConfig, clock: Clock
) -> AsyncIterator[StartIssuer]:
    """Starts issuers (default: the test configuration, data in tmp_path/data, the test
    clock); stops them at teardown."""
    started: list[Issuer] = []

    async def start(
        config: IssuerConfig | None = None, data_dir: Path | None = None, **kwargs: Any
    ) -> Issuer:
        kwargs.setdefault("clock", clock)
        issuer = Issuer(config or issuer_config, data_dir or tmp_path / "data", **kwargs)
        await issuer.start("127.0.0.1:0")
        started.append(issuer)
        return issuer

    yield start
    for issuer in started:
        await issuer.stop()


@pytest.fixture
async def issuer(start_issuer: StartIssuer) -> Issuer:
    return await start_issuer()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
