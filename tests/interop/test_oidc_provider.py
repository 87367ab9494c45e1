"""FLNet's token validation against tokens of a certified OpenID Provider (oidc-provider)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flnet.errors import Unauthenticated
from flnet.server.auth import AuthSettings

from .oidc_provider import OidcProvider, OidcProviderError, ProviderClient, require_node_modules

CLIENTS = (
    ProviderClient("acme-app", "acme-secret", "acme", ("runs:read", "runs:write"), roles=("ops",)),
    ProviderClient("globex-app", "globex-secret", "globex", ("runs:read",)),
    ProviderClient(
        "scheduler", "scheduler-secret", "acme", ("dispatch",), audience="flnet-orchestrator"
    ),
)


@pytest.fixture
async def provider() -> AsyncIterator[OidcProvider]:
    require_node_modules()
    async with OidcProvider(CLIENTS) as op:
        yield op


async def test_user_token_validates(provider: OidcProvider) -> None:
    settings = AuthSettings(issuer=provider.issuer, allow_http=True)
    keys = settings.jwks_client()
    try:
        principal = await settings.validator("user", keys).validate(
            await provider.token("acme-app")
        )
        assert principal.tenant == "acme"
        assert principal.scopes == {"runs:read", "runs:write"}
        assert principal.roles == {"ops"}
        assert principal.subject == principal.client_id == "acme-app"
        assert principal.claims["aud"] == "flnet"

        other = await settings.validator("user", keys).validate(await provider.token("globex-app"))
        assert other.tenant == "globex"
        assert other.roles == frozenset()
    finally:
        await keys.close()


async def test_scope_restricted_token(provider: OidcProvider) -> None:
    settings = AuthSettings(issuer=provider.issuer)
    keys = settings.jwks_client()
    try:
        token = await provider.token("acme-app", scope="runs:read")
        principal = await settings.validator("user", keys).validate(token)
        assert "runs:read" in principal.scopes
        assert "runs:write" not in principal.scopes
    finally:
        await keys.close()
    with pytest.raises(OidcProviderError, match="invalid_scope"):
        await provider.token("globex-app", scope="runs:write")


async def test_orchestrator_audience(provider: OidcProvider) -> None:
    settings = AuthSettings(issuer=provider.issuer)
    keys = settings.jwks_client()
    try:
        token = await provider.token("scheduler")  # the client's default audience
        principal = await settings.validator("orchestrator", keys).validate(token)
        assert principal.claims["aud"] == "flnet-orchestrator"
        assert principal.scopes == {"dispatch"}
        with pytest.raises(Unauthenticated):
            await settings.validator("user", keys).validate(token)
        user_token = await provider.token("scheduler", audience="flnet")
        assert (await settings.validator("user", keys).validate(user_token)).tenant == "acme"
    finally:
        await keys.close()


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_key_rotation(alg: str) -> None:
    require_node_modules()
    async with OidcProvider(CLIENTS, alg=alg) as provider:
        settings = AuthSettings(issuer=provider.issuer, min_refresh_interval=0)
        keys = settings.jwks_client()
        validator = settings.validator("user", keys)
        try:
            old_token = await provider.token("acme-app")
            await validator.validate(old_token)
            old_kid = provider.kids[0]

            await provider.rotate_keys(keep_old=True)
            assert provider.kids[1] == old_kid
            await validator.validate(await provider.token("acme-app"))  # refetch on new kid
            await validator.validate(old_token)

            await provider.rotate_keys(keep_old=False)
            new_token = await provider.token("acme-app")
            assert (await validator.validate(new_token)).tenant == "acme"
            assert keys.fetches == 3
            assert keys.kids == provider.kids
        finally:
            await keys.close()
