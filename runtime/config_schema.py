"""The configuration schema, derived from the tool's typed configuration class: the author
writes the `Config` dataclass once, and `flnet tool register` (or `flnet tool schema DIR`)
derives the JSON Schema from it, as Prefect and Flyte derive theirs from signatures.
tool.yaml's `config_schema`, when present, adds what a type cannot say (bounds, patterns,
descriptions): it is merged over the derived one, key by key."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

JsonSchema = dict[str, Any]


def schema_of(cls: type[Any]) -> JsonSchema:
    """The JSON Schema (2020-12) of dataclass `cls`: a closed object, one property per field
    (its type, and its default when that is JSON), fields without a default required."""
    hints = typing.get_type_hints(cls)
    properties: JsonSchema = {}
    required = []
    for field in dataclasses.fields(cls):
        prop = _type_schema(hints[field.name])
        default = _default(field)
        if default is not dataclasses.MISSING:
            prop["default"] = default
        elif field.default_factory is dataclasses.MISSING:
            required.append(field.name)
        properties[field.name] = prop
    schema: JsonSchema = {"type": "object", "additionalProperties": False}
    schema["properties"] = properties
    if required:
        schema["required"] = required
    return schema


def merged(derived: Mapping[str, Any], declared: Mapping[str, Any]) -> JsonSchema:
    """`declared` (tool.yaml's) over `derived`: objects merge key by key, anything else in
    `declared` replaces what was derived."""
    out = dict(derived)
    for key, value in declared.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def _type_schema(hint: Any) -> JsonSchema:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_type_schema(a) for a in typing.get_args(hint)]
        return {"anyOf": options}
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(hint))}
    if hint is type(None):
        return {"type": "null"}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return schema_of(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [member.value for member in hint]}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint in simple:
        return {"type": simple[hint]}
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        args = typing.get_args(hint)
        if args and args[-1] is not Ellipsis and origin is tuple and len(args) > 1:
            return {"type": "array", "prefixItems": [_type_schema(a) for a in args]}
        return {"type": "array", **({"items": _type_schema(args[0])} if args else {})}
    if origin in (dict, Mapping) or hint is dict:
        args = typing.get_args(hint)
        values = {"additionalProperties": _type_schema(args[1])} if len(args) == 2 else {}
        return {"type": "object", **values}
    return {}  # Any, object: anything


def _default(field: dataclasses.Field[Any]) -> Any:
    """The field's default as JSON, or MISSING (no default, or one JSON cannot hold)."""
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return dataclasses.MISSING
    if isinstance(value, enum.Enum):
        value = value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return value if _is_json(value) else dataclasses.MISSING


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False
