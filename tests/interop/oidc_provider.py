"""A certified OpenID Provider in a node process, for interoperability tests of FLNet's
token validation: panva's `oidc-provider` (npm, see package.json) runs
`oidc_provider.mjs` on 127.0.0.1 and issues client_credentials JWT access tokens.

    async with OidcProvider([ProviderClient("app", "secret", "acme", ("runs:read",))]) as op:
        token = await op.token("app")                          # aud "flnet"
        token = await op.token("app", audience="flnet-orchestrator")
        await op.rotate_keys()                                 # new signing key first

Tokens carry `iss`, `aud`, `sub` (= client_id), `client_id`, `scope`, `iat`, `exp`, `jti`,
`tenant` and, when the client has roles, `roles`. The audience is chosen with a resource
indicator (RFC 8707, an absolute URI for oidc-provider) that maps to the plain `aud`
string (RESOURCES). Without `scope` a token asks for every scope of its client.

Tests call `require_node_modules()` first: it skips when node or node_modules is missing,
except under CI=true, where it fails (`make node_modules/.installed` installs them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "node_modules" / "oidc-provider" / "package.json"
SERVER = Path(__file__).with_name("oidc_provider.mjs")
#: FLNet audience (`aud`) -> the resource indicator that asks for it.
RESOURCES: Mapping[str, str] = {
    "flnet": "urn:flnet:api",
    "flnet-orchestrator": "urn:flnet:orchestrator",
    "flnet-runtime": "urn:flnet:runtime",
}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def node_modules_ready() -> bool:
    """Whether `node` is on PATH and `oidc-provider` is installed in node_modules."""
    return shutil.which("node") is not None and PACKAGE.is_file()


def require_node_modules() -> None:
    """Skips the calling test when node or oidc-provider is missing; fails instead under
    CI=true, where a missing install is a broken build, not an optional extra."""
    if node_modules_ready():
        return
    message = (
        f"oidc-provider interop tests need node on PATH and {PACKAGE.parent} "
        "(run `make node_modules/.installed` or `npm install`)"
    )
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def signing_key(alg: str) -> dict[str, Any]:
    """A new private JWK for `alg` ("RS256" or "ES256") with a random `kid`."""
    jwk: dict[str, Any]
    if alg == "RS256":
        jwk = dict(RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048), as_dict=True))
    elif alg == "ES256":
        jwk = dict(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True))
    else:
        raise ValueError(f"unsupported algorithm {alg!r}: RS256 or ES256")
    return {**jwk, "kid": uuid.uuid4().hex, "alg": alg, "use": "sig"}


@dataclass(frozen=True)
class ProviderClient:
    """A confidential client (client_secret_basic, client_credentials only). `audience`:
    the `aud` of its tokens when a request names none."""

    client_id: str
    secret: str
    tenant: str
    scopes: tuple[str, ...]
    audience: str = "flnet"
    roles: tuple[str, ...] = ()


class OidcProviderError(RuntimeError):
    """The node process did not start, or refused a token request."""


class OidcProvider:
    """oidc-provider on 127.0.0.1 (an async context manager; or `start()` / `stop()`)."""

    def __init__(
        self,
        clients: Sequence[ProviderClient],
        *,
        alg: str = "RS256",
        token_ttl: int = 600,
    ) -> None:
        self.clients = {client.client_id: client for client in clients}
        for client in clients:
            if client.audience not in RESOURCES:
                raise ValueError(f"{client.client_id}: audience not in {sorted(RESOURCES)}")
        self.alg = alg
        self.token_ttl = token_ttl
        #: The private JWKs served, the signing one first.
        self.keys: list[dict[str, Any]] = [signing_key(alg)]
        self.port = 0
        self.issuer = ""
        #: Seconds the last start (or restart) took until discovery answered.
        self.startup_seconds = 0.0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def kids(self) -> list[str]:
        """`kid`s of the served keys; the first one signs."""
        return [key["kid"] for key in self.keys]

    async def __aenter__(self) -> OidcProvider:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Starts node (on a free port the first time) and waits for discovery to answer."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="oidc-provider-")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            await self._spawn()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Terminates node and waits for it; closes the HTTP session. Idempotent."""
        await self._terminate()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        directory, self._dir = self._dir, None
        if directory is not None:
            directory.cleanup()

    async def rotate_keys(self, keep_old: bool = True) -> None:
        """Restarts node on the same port with a new signing key first (the old ones kept
        after it when `keep_old`)."""
        self.keys = [signing_key(self.alg), *(self.keys if keep_old else ())]
        await self._terminate()
        await self._spawn()

    async def token(
        self, client_id: str, *, scope: str | None = None, audience: str | None = None
    ) -> str:
        """A client_credentials access token (a JWT) of `client_id` for `audience` (default:
        the client's) with `scope` (default: all of the client's scopes; "" for none)."""
        client = self.clients[client_id]
        scope = " ".join(client.scopes) if scope is None else scope
        form = {"grant_type": "client_credentials"}
        if audience is not None:  # else oidc-provider's defaultResource: the client's
            form["resource"] = RESOURCES[audience]
        if scope:
            form["scope"] = scope
        # client_secret_basic: form-urlencoded id and secret (RFC 6749 §2.3.1), then base64.
        credentials = f"{quote(client_id, safe='')}:{quote(client.secret, safe='')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        async with self._http().post(
            f"{self.issuer}/token", data=form, headers={"Authorization": authorization}
        ) as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise OidcProviderError(f"token of {client_id!r}: HTTP {response.status} {body}")
        token = body["access_token"]
        assert isinstance(token, str)
        return token

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise OidcProviderError("the provider is not started")
        return self._session

    def _config(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "alg": self.alg,
            "token_ttl": self.token_ttl,
            "jwks": {"keys": self.keys},
            "resources": {resource: aud for aud, resource in RESOURCES.items()},
            "clients": [
                {
                    "client_id": c.client_id,
                    "client_secret": c.secret,
                    "tenant": c.tenant,
                    "scope": " ".join(c.scopes),
                    "roles": list(c.roles),
                    "audience": c.audience,
                }
                for c in self.clients.values()
            ],
        }

    async def _spawn(self) -> None:
        assert self._dir is not None
        started = time.monotonic()
        config = Path(self._dir.name) / "config.json"
        config.write_text(json.dumps(self._config()))
        log = Path(self._dir.name) / "stderr.log"
        env = {k: v for k, v in os.environ.items() if k not in {"NODE_ENV", "DEBUG"}}
        with log.open("wb") as stderr:
            self._process = await asyncio.create_subprocess_exec(
                "node",
                str(SERVER),
                str(config),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=REPO,
                env=env,
            )
        process = self._process
        assert process.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                line = await process.stdout.readline()
                if not line:
                    raise OidcProviderError(f"node exited with code {await process.wait()}")
                ready = json.loads(line)
                self.port, self.issuer = int(ready["port"]), str(ready["issuer"])
                await self._wait_for_discovery()
        except (OidcProviderError, TimeoutError, ValueError, KeyError) as e:
            reason = f"not ready within {START_TIMEOUT:.0f}s" if isinstance(e, TimeoutError) else e
            stderr_text = log.read_text(errors="replace")[-4000:]
            raise OidcProviderError(
                f"oidc-provider did not start: {reason}; node stderr:\n{stderr_text}"
            ) from e
        self.startup_seconds = time.monotonic() - started

    async def _wait_for_discovery(self) -> None:
        url = f"{self.issuer}/.well-known/openid-configuration"
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with self._http().get(url) as response:
                    if response.status == 200:
                        issuer = (await response.json()).get("issuer")
                        if issuer != self.issuer:
                            raise OidcProviderError(f"discovery names issuer {issuer!r}")
                        return
            await asyncio.sleep(0.05)

    async def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        # os.kill, not process.terminate(): on 3.11 that reaps an exited child behind
        # asyncio's back ("Unknown child process pid ..., will report returncode 255").
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            await process.wait()
