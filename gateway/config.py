"""Renders the Envoy configuration (envoy.yaml.j2) from GatewaySettings."""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path

import jinja2

from flnet.addresses import split_address

from .settings import GatewaySettings

TEMPLATE = Path(__file__).with_name("envoy.yaml.j2")
API_PACKAGE = "/flnet.api.control.v1."

# The UI's Content-Security-Policy: its own scripts only, calls to its own origin, previews of
# outputs from blob: URLs, never framed. Inline styles are allowed: a preview of an HTML output
# (a sandboxed frame without scripts) inherits this policy, and reports style themselves inline.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; "
    "connect-src 'self'{issuer}; frame-src 'self' blob:; child-src blob:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
NOT_BUILT = (
    "<!doctype html><title>FLNet</title><p>The web UI is not built: run <code>make "
    "frontend</code> (or <code>npm --prefix frontend ci &amp;&amp; npm --prefix frontend run "
    "build</code>), then restart <code>flnet up</code>.</p>\n"
)


@dataclass(frozen=True)
class GrpcRoute:
    """One gRPC route: `match` is `path` or `prefix`."""

    match: str
    path: str
    timeout: str
    idle_timeout: str
    buffered: bool = True


# Server streams last as long as their subject (a watch, as long as the run); a client
# stream is bounded by the control plane per message, not by the gateway's buffer.
GRPC_ROUTES = (
    GrpcRoute("path", f"{API_PACKAGE}RunService/WatchRun", "0s", "0s"),
    GrpcRoute("path", f"{API_PACKAGE}RunService/ExportRun", "0s", "300s"),
    GrpcRoute("path", f"{API_PACKAGE}ArtifactService/DownloadArtifact", "0s", "300s"),
    GrpcRoute("path", f"{API_PACKAGE}ArtifactService/UploadInput", "0s", "300s", buffered=False),
    GrpcRoute("prefix", API_PACKAGE, "60s", "60s"),
    GrpcRoute("prefix", "/grpc.health.v1.Health/", "10s", "10s"),
    # Reflection is a bidirectional stream (grpcurl `list`, `describe`).
    GrpcRoute("prefix", "/grpc.reflection.", "60s", "60s", buffered=False),
)


@dataclass(frozen=True)
class StaticFile:
    path: str
    source: str
    content_type: str
    cache_control: str


def static_files(ui_dir: Path) -> list[StaticFile]:
    """Every file of the built UI but index.html (the fallback route serves it). Vite names
    the files under assets/ by their content hash: they never change, so they are cached."""
    files = []
    for source in sorted(p for p in ui_dir.rglob("*") if p.is_file()):
        relative = source.relative_to(ui_dir).as_posix()
        if relative == "index.html":
            continue
        content_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type == "application/javascript":
            content_type += "; charset=utf-8"
        immutable = relative.startswith("assets/")
        cache = "public, max-age=31536000, immutable" if immutable else "no-cache"
        files.append(StaticFile(f"/{relative}", str(source.resolve()), content_type, cache))
    return files


def render_config(settings: GatewaySettings) -> str:
    """The Envoy configuration (YAML) for `settings`."""
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    template = env.from_string(TEMPLATE.read_text())
    ui_dir = settings.resolved_ui_dir
    files = static_files(ui_dir) if ui_dir else []
    index = str((ui_dir / "index.html").resolve()) if ui_dir else ""
    sizes = [Path(f.source).stat().st_size for f in files]
    if index:
        sizes.append(Path(index).stat().st_size)
    issuer_origin = _origin(settings.oidc_issuer)
    own = issuer_origin in settings.public_origins or settings.issuer_upstream is not None
    ui_config = {
        "issuer": settings.oidc_issuer,
        "clientId": settings.ui_client_id,
        "scopes": settings.ui_scopes,
    }
    return template.render(
        admin=_address(settings.admin),
        listen=_address(settings.listen),
        control=[_address(a) for a in settings.control],
        issuer_upstream=_address(settings.issuer_upstream) if settings.issuer_upstream else None,
        issuer_prefix=settings.issuer_prefix,
        origins=settings.public_origins,
        access_log=settings.access_log_path,
        max_request_bytes=settings.max_request_bytes,
        max_direct_body=max([4096, *sizes]) + 1,
        grpc_routes=GRPC_ROUTES,
        api_prefix=API_PACKAGE,
        static_files=files,
        index_file=index,
        not_built=NOT_BUILT,
        ui_config=json.dumps(ui_config),
        csp=CSP.format(issuer="" if own else f" {issuer_origin}"),
        tls_cert=str(settings.tls_cert.resolve()) if settings.tls_cert else "",
        tls_key=str(settings.tls_key.resolve()) if settings.tls_key else "",
    )


def write_config(settings: GatewaySettings) -> Path:
    """Renders the configuration into settings.config_path (atomically) and returns it."""
    path = settings.config_path
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(settings.access_log_path).parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_config(settings))
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class _Address:
    host: str
    port: int


def _address(address: str) -> _Address:
    return _Address(*split_address(address))


def _origin(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"
