"""The embedded development OIDC issuer as a server: `Issuer(config, data_dir)`, then
`await start("127.0.0.1:0")` and `await stop()`.

Its state lives in `<data-dir>/oidc/`: `issuer.yaml` (the default configuration, written on
first start when no other is given), `dev-credentials.json` (the generated secrets),
`keys/` (signing keys) and `refresh-tokens.json`. Everything is served below the issuer
URL's path, so that `http://host/oidc` works behind a path-routing proxy without rewriting.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from flnet.addresses import split_address
from flnet.issuer.config import IssuerConfig, load_config, write_default_config
from flnet.issuer.endpoints import Endpoints
from flnet.issuer.grants import Provider
from flnet.issuer.keys import Clock, KeyStore
from flnet.issuer.refresh import RefreshTokenStore
from flnet.issuer.tokens import CLOCK_SKEW, TokenMinter

log = logging.getLogger("flnet.issuer")

CONFIG_FILE = "issuer.yaml"
_MAX_BODY = 64 * 1024


def issuer_dir(data_dir: Path) -> Path:
    """Where the issuer of the FLNet data directory `data_dir` keeps its state."""
    return data_dir / "oidc"


def load_or_create_config(data_dir: Path, config_path: Path | None = None) -> IssuerConfig:
    """`config_path` if given; else `<data-dir>/oidc/issuer.yaml`, written with the default
    development configuration if it does not exist yet."""
    if config_path is not None:
        return load_config(config_path)
    path = issuer_dir(data_dir) / CONFIG_FILE
    if not path.exists():
        write_default_config(path)
        log.info("wrote the default configuration %s (secrets in %s)", path, path.parent)
    return load_config(path)


class _AccessLogger(AbstractAccessLogger):
    """Method, path, status and duration: never the query string (codes, state) nor bodies."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %.1f ms", request.method, request.path, response.status, time * 1000
        )


class Issuer:
    """One running issuer: configuration, keys under `data_dir`, an aiohttp server."""

    def __init__(
        self,
        config: IssuerConfig,
        data_dir: Path,
        *,
        issuer_url: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self.directory = issuer_dir(data_dir)
        self._issuer_url = (issuer_url or config.issuer).rstrip("/")
        self._clock = clock
        self.keys = KeyStore(self.directory / "keys", clock)
        self.url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def key_retention(self) -> float:
        """How long a retired key stays published: until every token it signed expired."""
        return self.config.max_token_ttl + CLOCK_SKEW

    async def start(self, listen: str = "127.0.0.1:0") -> int:
        """Binds `listen` (port 0: any free port), serves, and returns the port."""
        host, port = split_address(listen, any_port=True)
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = self._issuer_url or f"http://{shown}:{self.port}"

        self.keys.open(self.config.signing_alg, self.key_retention)
        minter = TokenMinter(self.url, self.config, self.keys, self._clock)
        refresh = RefreshTokenStore(self.directory / "refresh-tokens.json", self._clock)
        provider = Provider(self.config, minter, refresh, self._clock)
        app = web.Application(client_max_size=_MAX_BODY)
        Endpoints(provider, self.keys, urlsplit(self.url).path.rstrip("/")).add_routes(app)

        runner = web.AppRunner(
            app,
            access_log_class=_AccessLogger,
            access_log=logging.getLogger("flnet.issuer.access"),
            shutdown_timeout=5.0,
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        log.info("OIDC issuer %s serving on %s:%d", self.url, host, self.port)
        return self.port

    def rotate_keys(self) -> str:
        """A new signing key from now on; the previous one stays published until the tokens
        it signed expired. Returns the new key id."""
        return self.keys.rotate(self.key_retention)

    async def stop(self) -> None:
        """Stops accepting, lets running requests finish, closes."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("OIDC issuer stopped")
