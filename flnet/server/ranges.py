"""Range checks of the times and enum values requests carry, made at the edge by every server
(control plane and orchestrator) before anything uses them.

A google.protobuf.Timestamp or Duration decodes from any 64-bit seconds, but what comes after
holds far less: SQLite's integers, Python's datetime and timedelta, the arithmetic of
deadlines. 2^62 seconds used to surface as an OverflowError deep in a query or a timer,
answered INTERNAL. Here it is InvalidArgument naming the field (a BadRequest field
violation). `*_violation` return the problem for callers that report several at once.

Enums are open in proto3: any 32-bit number decodes. An undeclared one used as a filter
overflowed PostgreSQL's smallint column (INTERNAL) where SQLite quietly matched nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import EnumDescriptor

from flnet.errors import FieldViolation, InvalidArgument

#: Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
#: The longest duration a request may carry: 100 years. Longer deadlines and grace periods
#: mean "never" anyway, and now + 100 years is still a valid timestamp.
MAX_DURATION_SECONDS = 100 * 365.25 * 86_400
_NANOS = 1_000_000_000


def timestamp_violation(ts: timestamp_pb2.Timestamp, field: str) -> FieldViolation | None:
    """What is wrong with `ts` as a point in time, if anything."""
    if not 0 <= ts.nanos < _NANOS:
        return FieldViolation(f"{field}.nanos", "must be in [0, 999999999]")
    if not MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS:
        return FieldViolation(field, "must be between 0001-01-01 and 9999-12-31 (UTC)")
    return None


def timestamp_us(ts: timestamp_pb2.Timestamp, field: str, reason: str | None = None) -> int:
    """`ts` in microseconds since the epoch; InvalidArgument (`reason`) out of range."""
    violation = timestamp_violation(ts, field)
    if violation is not None:
        raise InvalidArgument.field(*violation, reason)
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def duration_violation(
    d: duration_pb2.Duration, field: str, maximum: float = MAX_DURATION_SECONDS
) -> FieldViolation | None:
    """What is wrong with `d` as a length of time (not negative, at most `maximum`
    seconds), if anything."""
    if not -_NANOS < d.nanos < _NANOS or (d.seconds > 0 > d.nanos) or (d.seconds < 0 < d.nanos):
        return FieldViolation(
            f"{field}.nanos", "must be in [-999999999, 999999999], with the sign of seconds"
        )
    if d.seconds < 0 or d.nanos < 0:
        return FieldViolation(field, "must not be negative")
    if d.seconds + d.nanos / _NANOS > maximum:
        return FieldViolation(field, f"must be at most {maximum:.0f} seconds")
    return None


def duration_seconds(
    d: duration_pb2.Duration,
    field: str,
    reason: str | None = None,
    maximum: float = MAX_DURATION_SECONDS,
) -> float:
    """`d` in seconds; InvalidArgument (`reason`) when negative or longer than `maximum`."""
    violation = duration_violation(d, field, maximum)
    if violation is not None:
        raise InvalidArgument.field(*violation, reason)
    return d.seconds + d.nanos / _NANOS


def declared_enum_values(
    values: Iterable[int], enum: EnumDescriptor, field: str, reason: str | None = None
) -> list[int]:
    """`values` as given; InvalidArgument (`reason`) naming each one `enum` does not declare
    or declares as its unspecified zero (a filter on "unspecified" matches nothing)."""
    values = list(values)
    bad = [
        FieldViolation(f"{field}[{i}]", f"{v} is not a {enum.name}")
        for i, v in enumerate(values)
        if v == 0 or v not in enum.values_by_number
    ]
    if len(bad) == 1:
        raise InvalidArgument.field(*bad[0], reason)
    if bad:
        raise InvalidArgument(f"{field} holds undeclared values", reason, violations=bad)
    return values
