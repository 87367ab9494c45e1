"""The gateway: one origin for browsers and any gRPC client. Envoy, configured from one
template (`envoy.yaml.j2`), translates gRPC-web to gRPC for the control-plane replicas,
serves the built frontend and the development OIDC issuer, and enforces the edge's rules:
allowed origins, request size limits, security headers, timeouts fit for long streams.

May import: the shared core only (`flnet.addresses`, ...); it knows the other components by
their addresses, never by their code."""

from .config import render_config
from .settings import GatewaySettings

__all__ = ["GatewaySettings", "render_config"]
