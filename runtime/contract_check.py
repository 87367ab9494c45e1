"""Checks a tool against its contract before it is registered (`flnet tool check DIR`, and
`flnet tool register` first): the entrypoint loads, and the configuration schema matches
the configuration class field by field. A typo in either used to register fine and fail
each run later, blamed on its user or on the platform. The control plane never imports a
tool's code: this runs where the tool's author works."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import config_type_of
from .errors import ToolLoadError
from .loader import load_entrypoint

Problem = tuple[str, str]  # (field path in tool.yaml, what is wrong)

# The JSON Schema types a Python annotation accepts.
_JSON_TYPES: dict[Any, set[str]] = {
    int: {"integer"},
    float: {"number", "integer"},
    str: {"string"},
    bool: {"boolean"},
    list: {"array"},
    tuple: {"array"},
    dict: {"object"},
}


def check_tool(tool_dir: Path, entrypoint: str, schema: Mapping[str, Any]) -> list[Problem]:
    """What is wrong with the tool at `tool_dir` against its contract (empty: nothing)."""
    try:
        function = load_entrypoint(tool_dir, entrypoint)
    except ToolLoadError as exc:
        return [("entrypoint", exc.error.message)]
    config = config_type_of(function)
    if config is None:  # the tool takes its configuration as a plain dict
        return []
    return _compare(config, schema, "config_schema")


def _compare(cls: type[Any], schema: Mapping[str, Any], path: str) -> list[Problem]:
    problems: list[Problem] = []
    properties = schema.get("properties") or {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, subschema in properties.items():
        where = f"{path}.properties.{name}"
        if name not in fields:
            problems.append((where, f"{cls.__name__} has no field {name!r} to receive it"))
        elif isinstance(subschema, Mapping):
            problems += _compare_type(hints[name], subschema, where)
    closed = schema.get("additionalProperties") is False
    for name, field in fields.items():
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        if name not in properties and (closed or required):
            problems.append(
                (
                    f"{path}.properties",
                    f"{cls.__name__}.{name} is not in the schema: "
                    + ("no configuration can set it" if closed else "it has no default"),
                )
            )
    return problems


def _compare_type(hint: Any, schema: Mapping[str, Any], path: str) -> list[Problem]:
    declared = schema.get("type")
    hint = _unoptional(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if declared not in (None, "object"):
            return [(f"{path}.type", f"{hint.__name__} is an object, not {declared}")]
        return _compare(hint, schema, path)
    accepted = _JSON_TYPES.get(typing.get_origin(hint) or hint)
    if not isinstance(declared, str) or accepted is None or declared in accepted:
        return []
    return [(f"{path}.type", f"the field is {_name(hint)}, which {declared!r} does not fit")]


def _unoptional(hint: Any) -> Any:
    """`X` of `X | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return options[0]
    return hint


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)
