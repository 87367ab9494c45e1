"""Time as integer microseconds, and its protobuf forms. Times a request carries are
checked and converted at the edge by flnet.server.ranges (any 64-bit seconds decode; SQLite
and datetime hold far less)."""

from __future__ import annotations

import time

from google.protobuf import duration_pb2, timestamp_pb2


def now_us() -> int:
    return time.time_ns() // 1000


def timestamp(us: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def set_timestamp(field: timestamp_pb2.Timestamp, us: int) -> None:
    """Sets a message's Timestamp field in place (no message made and copied)."""
    field.seconds, field.nanos = us // 1_000_000, (us % 1_000_000) * 1000


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def seconds(d: duration_pb2.Duration) -> float:
    return d.ToNanoseconds() / 1e9
