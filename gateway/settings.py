"""The gateway's settings, read once at start: command-line flags, falling back to
environment variables, falling back to defaults.

    flag                  environment                      default
    --listen              FLNET_GATEWAY_LISTEN             127.0.0.1:8080
    --admin               FLNET_GATEWAY_ADMIN              127.0.0.1:9901 (readiness: /ready)
    --control             FLNET_GATEWAY_CONTROL            (required) control-plane replicas,
                                                           host:port, comma-separated
    --issuer-upstream     FLNET_GATEWAY_ISSUER_UPSTREAM    none: host:port of an issuer served
                                                           below the issuer URL's path
    --ui-dir              FLNET_UI_DIR                     the built frontend (frontend/dist)
    --origins             FLNET_GATEWAY_ORIGINS            the listen address's own origins
    --max-request-bytes   FLNET_GATEWAY_MAX_REQUEST_BYTES  5 MiB (a 4 MiB upload chunk fits)
    --access-log          FLNET_GATEWAY_ACCESS_LOG         <data-dir>/logs/gateway-access.log
    --tls-cert            FLNET_GATEWAY_TLS_CERT           none: plain HTTP. With --tls-key,
    --tls-key             FLNET_GATEWAY_TLS_KEY            TLS (PEM files), HTTP/2 for browsers
    --data-dir            FLNET_DATA_DIR                   (required) where the rendered
                                                           configuration is written
    (identity)            FLNET_OIDC_ISSUER                required: the issuer the UI signs
                          FLNET_UI_CLIENT_ID               in with, and its public client
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from flnet.addresses import split_address

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_ADMIN = "127.0.0.1:9901"
DEFAULT_MAX_REQUEST_BYTES = 5 * 1024 * 1024
UI_CLIENT_ID = "flnet-ui"
# What the UI asks for at sign-in; the issuer grants the subset the user's roles allow.
UI_SCOPES = (
    "openid profile email runs:read runs:write tools:read tools:write artifacts:read "
    "audit:read admin"
)
# The frontend as `npm run build` leaves it in a source checkout.
SOURCE_UI_DIR = Path(__file__).resolve().parent.parent / "frontend" / "dist"


@dataclass(frozen=True)
class GatewaySettings:
    listen: str
    admin: str
    control: tuple[str, ...]
    data_dir: Path
    oidc_issuer: str
    issuer_upstream: str | None = None
    ui_dir: Path | None = None
    origins: tuple[str, ...] = ()
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    access_log: str = ""
    ui_client_id: str = UI_CLIENT_ID
    ui_scopes: str = UI_SCOPES
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        split_address(self.listen)
        split_address(self.admin)
        if not self.control:
            raise ValueError("at least one control-plane address is needed (--control)")
        for address in self.control:
            split_address(address)
        if self.issuer_upstream is not None:
            split_address(self.issuer_upstream)
        issuer = urlsplit(self.oidc_issuer)
        if issuer.scheme not in ("http", "https") or not issuer.netloc:
            raise ValueError(f"FLNET_OIDC_ISSUER must be an http(s) URL, not {self.oidc_issuer!r}")
        for origin in self.origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ValueError(f"an origin is scheme://host[:port], not {origin!r}")
        if self.max_request_bytes < 64 * 1024:
            raise ValueError("--max-request-bytes must be at least 65536")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def public_origins(self) -> tuple[str, ...]:
        """Origins whose browsers may call: the configured ones, else the gateway's own."""
        if self.origins:
            return self.origins
        host, port = split_address(self.listen)
        scheme = "https" if self.tls else "http"
        if host in ("127.0.0.1", "localhost", "0.0.0.0", "::1", "::"):
            return (f"{scheme}://127.0.0.1:{port}", f"{scheme}://localhost:{port}")
        return (f"{scheme}://{host}:{port}",)

    @property
    def issuer_prefix(self) -> str | None:
        """The path below which the issuer is served through the gateway (e.g. `/oidc`), when
        the gateway fronts it."""
        if self.issuer_upstream is None:
            return None
        return urlsplit(self.oidc_issuer).path.rstrip("/") or "/"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "gateway" / "envoy.yaml"

    @property
    def access_log_path(self) -> str:
        return self.access_log or str(self.data_dir / "logs" / "gateway-access.log")

    @property
    def resolved_ui_dir(self) -> Path | None:
        """The built frontend, when there is one (its index.html exists)."""
        for candidate in (self.ui_dir, SOURCE_UI_DIR):
            if candidate is not None and (candidate / "index.html").is_file():
                return candidate
        return None

    @classmethod
    def load(cls, argv: Sequence[str], environ: Mapping[str, str]) -> GatewaySettings:
        """Parses `argv` (without the program name); exits with usage on bad input."""
        parser = argparse.ArgumentParser(
            prog="python -m flnet.gateway",
            description="FLNet gateway: Envoy in front of the control plane, UI and issuer.",
        )
        env = environ.get
        parser.add_argument("--listen", default=env("FLNET_GATEWAY_LISTEN", DEFAULT_LISTEN))
        parser.add_argument("--admin", default=env("FLNET_GATEWAY_ADMIN", DEFAULT_ADMIN))
        parser.add_argument("--control", default=env("FLNET_GATEWAY_CONTROL", ""))
        parser.add_argument("--issuer-upstream", default=env("FLNET_GATEWAY_ISSUER_UPSTREAM"))
        parser.add_argument("--ui-dir", type=Path, default=env("FLNET_UI_DIR"))
        parser.add_argument("--origins", default=env("FLNET_GATEWAY_ORIGINS", ""))
        parser.add_argument(
            "--max-request-bytes",
            type=int,
            default=int(env("FLNET_GATEWAY_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES)),
        )
        parser.add_argument("--access-log", default=env("FLNET_GATEWAY_ACCESS_LOG", ""))
        parser.add_argument("--tls-cert", type=Path, default=env("FLNET_GATEWAY_TLS_CERT"))
        parser.add_argument("--tls-key", type=Path, default=env("FLNET_GATEWAY_TLS_KEY"))
        parser.add_argument("--data-dir", type=Path, default=env("FLNET_DATA_DIR"))
        args = parser.parse_args(list(argv))
        if args.data_dir is None:
            parser.error("--data-dir (or FLNET_DATA_DIR) is required")
        try:
            return cls(
                listen=args.listen,
                admin=args.admin,
                control=_split(args.control),
                data_dir=Path(args.data_dir),
                oidc_issuer=env("FLNET_OIDC_ISSUER", ""),
                issuer_upstream=args.issuer_upstream or None,
                ui_dir=args.ui_dir,
                origins=_split(args.origins),
                max_request_bytes=args.max_request_bytes,
                access_log=args.access_log,
                ui_client_id=env("FLNET_UI_CLIENT_ID", UI_CLIENT_ID),
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
            )
        except ValueError as e:
            parser.error(str(e))


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
