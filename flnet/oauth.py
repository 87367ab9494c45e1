"""The OAuth 2.0 client side FLNet needs: the issuer's discovery document, token requests
(client_secret_basic), and ClientCredentials, a service's own token kept fresh.

Used by `flnet login` and by the control plane (its service credential towards the
orchestrator). aiohttp loads only when the issuer is actually asked something.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

if TYPE_CHECKING:
    import aiohttp

HTTP_TIMEOUT_SECONDS = 30.0


class LoginError(Exception):
    """Obtaining a token failed (the issuer's error, unreachable issuer, timeout, ...)."""


class TokenError(LoginError):
    """The token endpoint's error response (`error` is the OAuth error code)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error


def http_session(timeout: float = HTTP_TIMEOUT_SECONDS) -> aiohttp.ClientSession:
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))


async def discover(http: aiohttp.ClientSession, issuer: str) -> dict[str, Any]:
    """The issuer's OpenID Provider metadata; its `issuer` must be the one asked for."""
    import aiohttp

    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    try:
        async with http.get(url) as res:
            if res.status != 200:
                raise LoginError(f"{url}: HTTP {res.status}")
            metadata: dict[str, Any] = await res.json()
    except (aiohttp.ClientError, ValueError) as e:
        raise LoginError(f"cannot read the issuer's metadata at {url}: {e}") from None
    if metadata.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise LoginError(f"{url} describes issuer {metadata.get('issuer')!r}, not {issuer!r}")
    return metadata


def basic_authorization(client_id: str, client_secret: str) -> str:
    """client_secret_basic: both parts form-urlencoded first (RFC 6749 §2.3.1)."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


async def token_request(
    http: aiohttp.ClientSession,
    endpoint: str,
    form: dict[str, str],
    basic: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """POSTs a token request; the response body, or TokenError with the issuer's error."""
    import aiohttp

    headers = {"Authorization": basic_authorization(*basic)} if basic else {}
    try:
        async with http.post(endpoint, data=form, headers=headers) as res:
            body: Any = await res.json(content_type=None)
            status = res.status
    except (aiohttp.ClientError, ValueError) as e:
        raise LoginError(f"token request to {endpoint} failed: {e}") from None
    if not isinstance(body, dict):
        raise LoginError(f"token endpoint {endpoint}: unexpected HTTP {status} response")
    if status != 200 or "access_token" not in body:
        error = str(body.get("error") or f"HTTP {status}")
        raise TokenError(error, str(body.get("error_description") or ""))
    return body


class ClientCredentials:
    """A service's access token (client_credentials grant, client_secret_basic), cached and
    renewed `margin` seconds before it expires; one request at a time however many calls
    wait. An instance is a channels.TokenSource: `await source()` returns the token.

    - `scope`: the scopes to ask for (space-separated), None for the client's default.
    - `resource`: an RFC 8707 resource indicator, for issuers that choose the audience by
      it (e.g. oidc-provider); None leaves the audience to the issuer.
    """

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        resource: str | None = None,
        margin: float = 60.0,
        timeout: float = HTTP_TIMEOUT_SECONDS,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.resource = resource
        self.margin = margin
        self.timeout = timeout
        self._endpoint: str | None = None
        self._token = ""
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def __call__(self) -> str:
        if self._token and time.monotonic() < self._renew_at:
            return self._token
        async with self._lock:
            if not self._token or time.monotonic() >= self._renew_at:
                await self._renew()
        return self._token

    async def _renew(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.resource:
            form["resource"] = self.resource
        async with http_session(self.timeout) as http:
            if self._endpoint is None:
                self._endpoint = str((await discover(http, self.issuer))["token_endpoint"])
            body = await token_request(http, self._endpoint, form, (self.client_id, self._secret))
        lifetime = float(body.get("expires_in", 300))
        self._token = str(body["access_token"])
        # Renew at the margin, or halfway through a lifetime shorter than twice the margin.
        self._renew_at = time.monotonic() + max(lifetime - self.margin, lifetime / 2)
