"""JSON values carried in google.protobuf.Struct. A Struct holds every number as a double;
`normalize` turns integral doubles back into ints, so `{"epochs": 10}` reads, validates and
hashes the same on every side (CLI, control plane, engine)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2


def normalize(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def struct_to_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = normalize(json_format.MessageToDict(s))
    return result


def dict_to_struct(d: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(dict(d))
    return s
