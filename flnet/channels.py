"""gRPC channel and server options shared by every FLNet process, so that message-size
limits and keepalive agree on both ends (a mismatch surfaces as RESOURCE_EXHAUSTED or GOAWAY)."""

from __future__ import annotations

import grpc

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

CLIENT_OPTIONS: list[tuple[str, int]] = [
    *_COMMON,
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Reconnect quickly after a control-plane restart.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def insecure_channel(address: str) -> grpc.aio.Channel:
    """An aio channel with FLNet's options. Create it inside the running loop."""
    return grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS)
