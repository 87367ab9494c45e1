"""gRPC channel and server options shared by every FLNet process, so that message-size
limits and keepalive agree on both ends (a mismatch surfaces as RESOURCE_EXHAUSTED or GOAWAY)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import ServiceDescriptor

from flnet.api.control.v1 import (
    artifact_service_pb2,
    audit_service_pb2,
    fleet_service_pb2,
    run_service_pb2,
    tool_service_pb2,
)
from flnet.api.orchestrator.v1 import session_service_pb2
from flnet.api.runtime.v1 import runtime_service_pb2

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# Chunk size for streamed artifact bytes: far below the message limit.
CHUNK_BYTES = 1024 * 1024

_COMMON: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]

SERVER_OPTIONS: list[tuple[str, int]] = [
    *_COMMON,
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # Accept client pings every 10 s, even on idle connections.
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
]

# The services whose contracts every FLNet process knows (their modules register them in the
# descriptor pool).
SERVICES = (
    artifact_service_pb2.DESCRIPTOR.services_by_name["ArtifactService"],
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"],
    run_service_pb2.DESCRIPTOR.services_by_name["RunService"],
    tool_service_pb2.DESCRIPTOR.services_by_name["ToolService"],
    fleet_service_pb2.DESCRIPTOR.services_by_name["FleetService"],
    session_service_pb2.DESCRIPTOR.services_by_name["SessionService"],
    runtime_service_pb2.DESCRIPTOR.services_by_name["RuntimeService"],
)
_SAFE_LEVELS = (
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
)


def retry_safe(services: tuple[ServiceDescriptor, ...] = SERVICES) -> dict[str, tuple[str, ...]]:
    """The calls that are safe to repeat, by service, as the contracts declare them
    (`idempotency_level`): reads (NO_SIDE_EFFECTS), and writes that recognise a repetition
    (IDEMPOTENT: CreateRun and ReproduceRun by their request_id, which FLNet's clients always
    set; uploads by offset or content; a cancel or a tool version recorded once). Not, for
    instance, StartUpload (a second upload), FinishUpload, UpdateDevConfig, StartDevTest, nor
    the engine's Connect (its session reconnects by itself)."""
    return {
        service.full_name: tuple(
            m.name for m in service.methods if m.GetOptions().idempotency_level in _SAFE_LEVELS
        )
        for service in services
    }


RETRY_SAFE = retry_safe()

# A call that found no server (UNAVAILABLE: refused, or the connection broke before it was
# answered) is tried again, on the next address when the target lists several control-plane
# replicas ("ipv4:10.0.0.1:50051,10.0.0.2:50051", or a DNS name resolving to them). gRPC
# retries a call only before any response reached it; but the server may have done its part
# (a replica killed before it answered), so only RETRY_SAFE calls are retried. Calls that
# never reached a server are retried by gRPC whatever their method.
RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": service, "method": method}
                    for service, methods in RETRY_SAFE.items()
                    for method in methods
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

CLIENT_OPTIONS: list[tuple[str, int | str]] = [
    *_COMMON,
    ("grpc.service_config", RETRY_SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Reconnect quickly after a control-plane restart.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def insecure_channel(address: str, token: str | TokenSource | None = None) -> grpc.aio.Channel:
    """An aio channel with FLNet's options; with `token`, every call carries it as a bearer
    token (see bearer_interceptors). Create it inside the running loop."""
    interceptors = bearer_interceptors(token) if token is not None else None
    return grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS, interceptors=interceptors)


TokenSource = Callable[[], Awaitable[str]]
"""Returns a valid access token; called before each RPC (cache inside it)."""


class _Bearer:
    def __init__(self, token: str | TokenSource) -> None:
        self._token = token

    async def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if metadata.get_all("authorization"):
            return details  # the call brings its own credential
        token = self._token if isinstance(self._token, str) else await self._token()
        metadata["authorization"] = f"Bearer {token}"
        return details._replace(metadata=metadata)  # type: ignore[attr-defined, no-any-return]


class _UnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._with_token(details), request)


class _UnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(await self._with_token(details), request)


class _StreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(await self._with_token(details), requests)


class _StreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(await self._with_token(details), requests)


def bearer_interceptors(token: str | TokenSource) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors adding `authorization: Bearer <token>` to every call of a channel (a
    token string, or a TokenSource asked for each call, so expiring tokens are renewed
    transparently), unless the call brings its own. One per call kind: grpc.aio files an
    interceptor under one kind only."""
    return [cls(token) for cls in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
