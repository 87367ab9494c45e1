"""The issuer's HTTP endpoints (aiohttp), below the issuer URL's path:

    GET  /.well-known/openid-configuration   OpenID Provider metadata
    GET  /.well-known/oauth-authorization-server   the same (RFC 8414)
    GET  /jwks                                current and still-published previous public keys
    POST /token                               client_credentials, authorization_code, refresh_token
    GET  /authorize                           validates the request, shows the login form
    POST /authorize                           the login form: redirects back with code and state
    GET  /userinfo (and POST)                 claims of a bearer access token's subject
    GET  /healthz                             200 while serving

Handlers translate HTTP to the Provider and back; the decisions are in grants.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from multidict import MultiMapping

from flnet.issuer.errors import InvalidClient, OAuthError, RedirectedError, UntrustedRequest
from flnet.issuer.grants import Provider, with_query
from flnet.issuer.keys import KeyStore
from flnet.issuer.login_page import SECURITY_HEADERS, error_page, login_form

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"


def _single_values(values: MultiMapping[object]) -> dict[str, str]:
    """The parameters of a request; a repeated or non-text one is invalid (RFC 6749 §3.1)."""
    result: dict[str, str] = {}
    for key, value in values.items():
        if key in result:
            raise OAuthError("invalid_request", f"parameter {key!r} is repeated")
        if not isinstance(value, str):
            raise OAuthError("invalid_request", f"parameter {key!r} is not text")
        result[key] = value
    return result


def _oauth_error(error: OAuthError) -> web.Response:
    headers = dict(_NO_STORE)
    if isinstance(error, InvalidClient) and error.basic:
        headers["WWW-Authenticate"] = 'Basic realm="flnet", charset="UTF-8"'
    if error.error == "invalid_token":
        description = error.description.replace("\\", "").replace('"', "'")
        headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{description}"'
        )
    return web.json_response(error.as_dict(), status=error.status, headers=headers)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


class Endpoints:
    """The routes of one issuer."""

    def __init__(self, provider: Provider, keys: KeyStore, prefix: str) -> None:
        self._provider = provider
        self._keys = keys
        self._prefix = prefix

    def add_routes(self, app: web.Application) -> None:
        p = self._prefix
        app.router.add_get(f"{p}/.well-known/openid-configuration", self.discovery)
        app.router.add_get(f"{p}/.well-known/oauth-authorization-server", self.discovery)
        app.router.add_get(f"{p}/jwks", self.jwks)
        app.router.add_post(f"{p}/token", self.token)
        app.router.add_get(f"{p}/authorize", self.authorize)
        app.router.add_post(f"{p}/authorize", self.login)
        app.router.add_get(f"{p}/userinfo", self.userinfo)
        app.router.add_post(f"{p}/userinfo", self.userinfo)
        app.router.add_get(f"{p}/healthz", self.health)

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            self._provider.discovery(), headers={"Cache-Control": "public, max-age=300"}
        )

    async def jwks(self, request: web.Request) -> web.Response:
        # Revalidated on every use: after a rotation the new key must be found at once.
        return web.json_response(self._keys.jwks(), headers={"Cache-Control": "no-cache"})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def token(self, request: web.Request) -> web.Response:
        try:
            if request.content_type != _FORM:
                raise OAuthError("invalid_request", f"the body must be {_FORM}")
            form = _single_values(await request.post())
            body = self._provider.token(form, request.headers.get("Authorization"))
        except OAuthError as e:
            return _oauth_error(e)
        return web.json_response(body, headers=_NO_STORE)

    async def authorize(self, request: web.Request) -> web.Response:
        try:
            params = _single_values(request.query)
            nonce, pending = self._provider.begin_authorization(params)
        except RedirectedError as e:
            raise web.HTTPFound(self._error_location(e)) from None
        except (UntrustedRequest, OAuthError) as e:
            description = e.description if isinstance(e, OAuthError) else str(e)
            return _html(error_page(description), 400)
        action = f"{self._prefix}/authorize"
        return _html(login_form(action, nonce, pending.client_id, pending.scopes))

    async def login(self, request: web.Request) -> web.Response:
        try:
            if request.content_type != _FORM:
                raise UntrustedRequest(f"the form must be posted as {_FORM}")
            form = _single_values(await request.post())
            result = self._provider.login(
                form.get("csrf_token", ""), form.get("username", ""), form.get("password", "")
            )
        except (UntrustedRequest, OAuthError) as e:
            description = e.description if isinstance(e, OAuthError) else str(e)
            return _html(error_page(description), 400)
        if result.redirect_to is not None:
            raise web.HTTPFound(result.redirect_to, headers=_NO_STORE)
        assert result.retry_nonce is not None and result.pending is not None
        page = login_form(
            f"{self._prefix}/authorize",
            result.retry_nonce,
            result.pending.client_id,
            result.pending.scopes,
            username=form.get("username", ""),
            error="Wrong user name or password.",
        )
        return _html(page, 401)

    def _error_location(self, error: RedirectedError) -> str:
        params: Mapping[str, str | None] = {
            "error": error.error,
            "error_description": error.description,
            "state": error.state,
            "iss": self._provider.issuer,
        }
        return with_query(error.redirect_uri, params)

    async def userinfo(self, request: web.Request) -> web.Response:
        try:
            info = self._provider.userinfo(request.headers.get("Authorization"))
        except OAuthError as e:
            return _oauth_error(e)
        return web.json_response(info, headers=_NO_STORE)
