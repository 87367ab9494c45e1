"""JSON values carried in google.protobuf.Struct. A Struct holds every number as a double;
`normalize` turns integral doubles back into ints, so `{"epochs": 10}` reads, validates and
hashes the same on every side (CLI, control plane, engine). A double may also be NaN or
±Infinity, which JSON has not: `struct_to_dict` refuses them as InvalidArgument naming
where they are."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from flnet.errors import InvalidArgument


def normalize(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def non_finite(s: struct_pb2.Struct, field: str) -> str | None:
    """The path (`field.key[0].key`) of the first number in `s` that is NaN or ±Infinity,
    or None when every number is finite."""
    # Breadth first, in a loop rather than by recursion (nesting is as deep as the sender
    # made it); each value's path is spelled out only when needed.
    pending: deque[tuple[str, str | int, struct_pb2.Value]] = deque(
        (field, k, v) for k, v in sorted(s.fields.items())
    )
    while pending:
        parent, key, value = pending.popleft()
        kind = value.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(value.number_value):
            return _path(parent, key)
        if kind == "struct_value":
            path = _path(parent, key)
            pending.extend((path, k, v) for k, v in sorted(value.struct_value.fields.items()))
        elif kind == "list_value":
            path = _path(parent, key)
            pending.extend((path, i, v) for i, v in enumerate(value.list_value.values))
    return None


def _path(parent: str, key: str | int) -> str:
    return f"{parent}[{key}]" if isinstance(key, int) else f"{parent}.{key}"


def check_finite(s: struct_pb2.Struct, field: str, reason: str | None = None) -> None:
    """InvalidArgument (`reason`) naming the path under `field` of a number in `s` that is
    NaN or ±Infinity."""
    path = non_finite(s, field)
    if path is not None:
        raise InvalidArgument.field(
            path, "must be a finite number (JSON has no NaN or Infinity)", reason
        )


def struct_to_dict(
    s: struct_pb2.Struct, field: str = "config", reason: str | None = None
) -> dict[str, Any]:
    """The JSON object `s` holds; InvalidArgument as `check_finite(s, field, reason)`."""
    check_finite(s, field, reason)
    result: dict[str, Any] = normalize(json_format.MessageToDict(s))
    return result


def dict_to_struct(d: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(dict(d))
    return s
