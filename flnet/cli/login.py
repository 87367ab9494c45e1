"""`flnet login`: obtain an access token from the platform's OIDC issuer and cache it in
`<data-dir>/credentials.json` (mode 0600) for the other commands.

- By default, authorization code + PKCE (S256) as a native app (RFC 8252): a one-shot HTTP
  listener on 127.0.0.1 (any free port) receives the redirect; the login URL is printed on
  stderr (and opened in a browser unless `--no-browser`), so that a script can drive it too.
- `--client-credentials --client-id ID --client-secret S` (or `--client-secret-file F`, or
  `$FLNET_CLIENT_SECRET`): a service client's own token.

`access_token(data_dir)` returns a valid cached token, refreshing it when it is about to
expire (refresh token, or again client_credentials when `$FLNET_CLIENT_SECRET` is set);
refreshes are serialised across processes, since a refresh token is single-use.

The issuer: `--issuer`, else `$FLNET_OIDC_ISSUER`, else the `oidc` entry of the running
stack's endpoints.json. Tokens and secrets are never printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import sys
import time
import webbrowser
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from html import escape, unescape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flnet import timeouts
from flnet.cli import render
from flnet.cli.stack import DEV_CREDENTIALS, StackNotRunning, read_endpoints
from flnet.client.tokens import unverified_claims
from flnet.datadir import private_dir, write_private
from flnet.oauth import LoginError, TokenError, discover, http_session, token_request

if TYPE_CHECKING:
    # aiohttp loads only when a login or a refresh talks to the issuer: every other command
    # of the CLI starts without it.
    import aiohttp
    from aiohttp import web

CREDENTIALS_FILE = "credentials.json"
DEFAULT_CLIENT_ID = "flnet-cli"
CALLBACK_PATH = "/callback"
# A cached token is renewed this long before it expires, so that it never expires in flight.
EXPIRY_LEEWAY = 30.0

OpenUrl = Callable[[str], Awaitable[None]]


class LoginRequired(LoginError):
    """No usable cached credential: run `flnet login`."""


# ----------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """The cached result of a login."""

    issuer: str
    token_endpoint: str
    client_id: str
    grant_type: str
    access_token: str
    expires_at: float
    scope: str = ""
    refresh_token: str | None = None
    token_type: str = "Bearer"

    def fresh(self, leeway: float = EXPIRY_LEEWAY) -> bool:
        return time.time() + leeway < self.expires_at

    def claims(self) -> dict[str, Any]:
        """The access token's claims, unverified (for display only; {} if it is opaque)."""
        return unverified_claims(self.access_token)


def credentials_path(data_dir: Path) -> Path:
    return data_dir / CREDENTIALS_FILE


def load_credentials(data_dir: Path) -> Credentials | None:
    try:
        data = json.loads(credentials_path(data_dir).read_text())
        return Credentials(**data)
    except (OSError, ValueError, TypeError):
        return None


def save_credentials(data_dir: Path, credentials: Credentials) -> Path:
    """Replaces the cache atomically; the file is 0600 from its first byte."""
    path = credentials_path(data_dir)
    write_private(path, json.dumps(asdict(credentials), indent=2))
    return path


@contextlib.contextmanager
def _cache_lock(data_dir: Path) -> Iterator[None]:
    """One refresher at a time across processes (a refresh token is single-use)."""
    private_dir(data_dir)
    fd = os.open(data_dir / f".{CREDENTIALS_FILE}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


async def access_token(data_dir: Path, leeway: float = EXPIRY_LEEWAY) -> str:
    """A valid access token from the cache, refreshed (and cached again) when it expires
    within `leeway` seconds. Raises LoginRequired when there is none to be had."""
    cached = load_credentials(data_dir)
    if cached is not None and cached.fresh(leeway):
        return cached.access_token
    with _cache_lock(data_dir):
        cached = load_credentials(data_dir)  # another process may have refreshed meanwhile
        if cached is None:
            raise LoginRequired("not logged in: run `flnet login`")
        if not cached.fresh(leeway):
            cached = await renew(cached)
            save_credentials(data_dir, cached)
    return cached.access_token


async def renew(cached: Credentials) -> Credentials:
    """New credentials for expired ones: the refresh token, or the client secret from
    $FLNET_CLIENT_SECRET for a client_credentials login."""
    async with http_session() as http:
        if cached.refresh_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": cached.refresh_token,
                "client_id": cached.client_id,
            }
            try:
                body = await token_request(http, cached.token_endpoint, form)
            except TokenError as e:
                if e.error != "invalid_grant":
                    raise
                raise LoginRequired(f"the session ended ({e}): run `flnet login`") from None
            # An issuer that does not rotate refresh tokens sends none: keep ours.
            body.setdefault("refresh_token", cached.refresh_token)
            return _credentials(
                cached.issuer, cached.token_endpoint, cached.client_id, cached.grant_type, body
            )
        secret = os.environ.get("FLNET_CLIENT_SECRET")
        if cached.grant_type == "client_credentials" and secret:
            return await _client_credentials(
                http,
                cached.issuer,
                cached.token_endpoint,
                cached.client_id,
                secret,
                cached.scope or None,
            )
    raise LoginRequired("the cached token expired: run `flnet login`")


# ---------------------------------------------------------------------------- grants


def _credentials(
    issuer: str, endpoint: str, client_id: str, grant_type: str, body: dict[str, Any]
) -> Credentials:
    return Credentials(
        issuer=issuer,
        token_endpoint=endpoint,
        client_id=client_id,
        grant_type=grant_type,
        access_token=str(body["access_token"]),
        expires_at=time.time() + float(body.get("expires_in", 300)),
        scope=str(body.get("scope", "")),
        refresh_token=body.get("refresh_token"),
        token_type=str(body.get("token_type", "Bearer")),
    )


async def _client_credentials(
    http: aiohttp.ClientSession,
    issuer: str,
    endpoint: str,
    client_id: str,
    client_secret: str,
    scope: str | None,
) -> Credentials:
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    body = await token_request(http, endpoint, form, (client_id, client_secret))
    return _credentials(issuer, endpoint, client_id, "client_credentials", body)


async def client_credentials_login(
    issuer: str, client_id: str, client_secret: str, scope: str | None = None
) -> Credentials:
    """A service client's token (client_secret_basic)."""
    async with http_session() as http:
        metadata = await discover(http, issuer)
        return await _client_credentials(
            http, issuer, metadata["token_endpoint"], client_id, client_secret, scope
        )


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier (64 characters) and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class _Callback:
    """The loopback listener: the first redirect carrying our state ends the wait."""

    def __init__(self, state: str, issuer: str) -> None:
        self._state = state
        self._issuer = issuer
        self.result: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handle(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("state") != self._state:
            # Not our login (a stale tab, or someone else): ignore it and keep waiting.
            return _page("This sign-in request is unknown or outdated.", 400)
        if "iss" in q and q["iss"].rstrip("/") != self._issuer.rstrip("/"):
            error = LoginError(f"the response came from issuer {q['iss']!r}, not {self._issuer!r}")
        elif "error" in q:
            error = LoginError(f"{q['error']}: {q.get('error_description', '')}".rstrip(": "))
        elif q.get("code"):
            if not self.result.done():
                self.result.set_result(q["code"])
            return _page("Signed in to FLNet. You can close this window.")
        else:
            error = LoginError("the redirect carried neither a code nor an error")
        if not self.result.done():
            self.result.set_exception(error)
        return _page(f"Sign-in failed: {error}", 400)


def _page(message: str, status: int = 200) -> web.Response:
    from aiohttp import web

    text = f"<!doctype html><title>FLNet</title><p>{escape(message)}</p>"
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


async def browser_login(
    issuer: str,
    open_url: OpenUrl,
    client_id: str = DEFAULT_CLIENT_ID,
    scope: str | None = None,
    sign_in_within: float = 300.0,
) -> Credentials:
    """Authorization code + PKCE through a browser: `open_url` is given the authorization
    URL (print it, open a browser, or drive the login form from a test)."""
    from aiohttp import web
    from yarl import URL

    async with http_session() as http:
        metadata = await discover(http, issuer)
        if "S256" not in metadata.get("code_challenge_methods_supported", []):
            raise LoginError(f"issuer {issuer} does not announce PKCE S256")
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(24)
        callback = _Callback(state, issuer)
        app = web.Application()
        app.router.add_get(CALLBACK_PATH, callback.handle)
        # No access log: the redirect's query carries the code.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            redirect_uri = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
            params = {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
            if scope:
                params["scope"] = scope
            url = str(URL(metadata["authorization_endpoint"]).update_query(params))
            await open_url(url)
            try:
                code = await timeouts.wait_for(callback.result, sign_in_within)
            except TimeoutError:
                raise LoginError(f"no sign-in within {sign_in_within:g} s") from None
        finally:
            await runner.cleanup()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        }
        endpoint = metadata["token_endpoint"]
        body = await token_request(http, endpoint, form)
        return _credentials(issuer, endpoint, client_id, "authorization_code", body)


def scripted_browser(username: str, password: str) -> OpenUrl:
    """An OpenUrl that signs in as `username` on the development issuer's login page (the
    form's csrf_token, username and password), then follows the redirect to our callback:
    the same authorization code + PKCE flow as a person in a browser."""

    async def open_url(url: str) -> None:
        async with http_session() as http:
            async with http.get(url) as res:
                page = await res.text()
                action = str(res.url)
            found = re.search(r'name="csrf_token" value="([^"]+)"', page)
            if res.status != 200 or found is None:
                body = re.sub(r"(?s)<(style|title|head)\b.*?</\1>", " ", page)
                said = re.sub(r"<[^>]*>|\s+", " ", body).strip()[:200]  # the issuer's reason
                raise LoginError(
                    f"no login form at the issuer (HTTP {res.status}){': ' + said if said else ''}"
                )
            form = {"csrf_token": unescape(found[1]), "username": username, "password": password}
            async with http.post(action, data=form) as res:  # redirects to our callback
                if res.status != 200:
                    raise LoginError(f"signing in as {username} failed (HTTP {res.status})")

    return open_url


async def dev_login(
    data_dir: Path,
    issuer: str,
    scope: str | None = None,
    client_id: str = DEFAULT_CLIENT_ID,
) -> Credentials:
    """Signs in as the development issuer's administrator, whose generated password is in
    <data-dir>/oidc/dev-credentials.json (`flnet login --dev`, the demo), through the public
    client `client_id`, asking for `scope` (None: all the client may get). Only for the
    embedded issuer of a local stack."""
    path = data_dir / "oidc" / DEV_CREDENTIALS
    try:
        dev = json.loads(path.read_text())
        username, password = str(dev["admin_username"]), str(dev["admin_password"])
    except (OSError, ValueError, KeyError) as e:
        raise LoginError(f"no development credentials in {path}: {e}") from None
    return await browser_login(
        issuer, scripted_browser(username, password), client_id, scope, sign_in_within=30
    )


# ------------------------------------------------------------------------------- CLI


def add_login_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `login` to the `flnet` command line."""
    s = subparsers.add_parser(
        "login",
        help="sign in to the platform's OIDC issuer and cache the token",
        description=(__doc__ or "").split("\n\n")[0],
    )
    s.add_argument("--issuer", help="issuer URL ($FLNET_OIDC_ISSUER, default: the running stack's)")
    s.add_argument("--client-id", help=f"OAuth client (default {DEFAULT_CLIENT_ID})")
    s.add_argument("--scope", help="space-separated scopes (default: all the client may get)")
    s.add_argument(
        "--client-credentials",
        action="store_true",
        help="log in as a service client (client_credentials grant) instead of a user",
    )
    secret = s.add_mutually_exclusive_group()
    secret.add_argument("--client-secret", help="the client's secret ($FLNET_CLIENT_SECRET)")
    secret.add_argument("--client-secret-file", type=Path, help="read the client secret from F")
    s.add_argument("--no-browser", action="store_true", help="only print the sign-in URL")
    s.add_argument(
        "--dev",
        action="store_true",
        help="sign in as the local development issuer's admin (flnet up's generated password)",
    )
    s.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for sign-in")
    s.add_argument(
        "--status",
        action="store_true",
        help="show the cached credential (refreshing it if expired) instead of logging in",
    )
    s.set_defaults(handler=login)
    s = subparsers.add_parser(
        "token",
        help="print the cached access token (refreshed when it expires): "
        'grpcurl -H "authorization: Bearer $(flnet token)" ...',
    )
    s.set_defaults(handler=token)


async def token(args: argparse.Namespace) -> int:
    """`flnet token`: the access token alone on stdout, for other clients."""
    sys.stdout.write(await access_token(args.data_dir) + "\n")
    return 0


def resolve_issuer(explicit: str | None, data_dir: Path) -> str:
    issuer = explicit or os.environ.get("FLNET_OIDC_ISSUER")
    if issuer:
        return issuer.rstrip("/")
    try:
        endpoints = read_endpoints(data_dir)
    except StackNotRunning:
        endpoints = {}
    if "oidc" in endpoints:
        return endpoints["oidc"].rstrip("/")
    raise LoginError("no issuer: pass --issuer, set FLNET_OIDC_ISSUER or start `flnet up`")


def _client_secret(args: argparse.Namespace) -> str:
    if args.client_secret_file:
        return str(args.client_secret_file.read_text().strip())
    secret = args.client_secret or os.environ.get("FLNET_CLIENT_SECRET")
    if not secret:
        raise LoginError("--client-credentials needs --client-secret(-file) or FLNET_CLIENT_SECRET")
    return str(secret)


async def _print_url(url: str, *, browser: bool) -> None:
    sys.stderr.write(f"Open this URL to sign in:\n{url}\n")
    sys.stderr.flush()
    if browser:
        await asyncio.to_thread(webbrowser.open, url)


async def login(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    try:
        if args.status:
            await access_token(data_dir)
            credentials = load_credentials(data_dir)
            assert credentials is not None
        else:
            issuer = resolve_issuer(args.issuer, data_dir)
            if args.dev:
                credentials = await dev_login(
                    data_dir, issuer, args.scope, args.client_id or DEFAULT_CLIENT_ID
                )
            elif args.client_credentials:
                if not args.client_id:
                    raise LoginError("--client-credentials needs --client-id")
                credentials = await client_credentials_login(
                    issuer, args.client_id, _client_secret(args), args.scope
                )
            else:
                if args.client_secret or args.client_secret_file:
                    raise LoginError("a client secret goes with --client-credentials")
                credentials = await browser_login(
                    issuer,
                    lambda url: _print_url(url, browser=not args.no_browser),
                    args.client_id or DEFAULT_CLIENT_ID,
                    args.scope,
                    args.timeout,
                )
            save_credentials(data_dir, credentials)
    except OSError as e:  # main() says it, as every command's error (-o json: as JSON)
        raise LoginError(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)) from None
    _show(args, credentials, credentials_path(data_dir))
    return 0


def _show(args: argparse.Namespace, credentials: Credentials, path: Path) -> None:
    claims = credentials.claims()
    summary = {
        "issuer": credentials.issuer,
        "clientId": credentials.client_id,
        "subject": claims.get("sub", ""),
        "tenant": claims.get("tenant", ""),
        "scope": credentials.scope,
        "expiresAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(credentials.expires_at)),
        "refreshable": credentials.refresh_token is not None,
        "credentials": str(path),
    }
    if args.output == "json":
        render.print_json(summary)
        return
    render.console.print(
        f"signed in to {summary['issuer']} as [bold]{summary['subject']}[/bold]"
        f" (tenant {summary['tenant'] or '-'}, client {credentials.client_id})"
    )
    render.console.print(f"scopes  {credentials.scope or '-'}")
    render.console.print(f"token cached in {path} until {summary['expiresAt']}")
