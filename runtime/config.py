"""Typed run configuration: the run's config dict (from a google.protobuf.Struct, where every
number is a double) becomes the tool's Config dataclass.

Rules: nested dicts become nested dataclasses where the field is annotated so; a float that is
integral becomes an int where the field is an int; unknown keys and missing required fields are
errors that name the key path (``model.layers[2].units``). The control plane has already checked
the config against the tool's JSON Schema; this is the second, typed check at the tool's edge.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration does not fit the tool's Config type. `path` names the key."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path or "<config>"
        self.problem = message
        super().__init__(f"{self.path}: {message}")


def config_type_of(function: Callable[..., object]) -> type[Any] | None:
    """The Config dataclass of `def main(ctx: Context[Config])`, or None when the tool takes a
    plain dict (no annotation, `Context`, `Context[dict[...]]`, `Context[Any]`).

    Raises TypeError when the annotation names a type that is neither a dataclass nor a mapping,
    and NameError when it cannot be resolved.
    """
    params = list(inspect.signature(function).parameters)
    if not params:
        raise TypeError("the tool function must take one argument, the Context")
    target = function if inspect.isroutine(function) else type(function).__call__
    hint = typing.get_type_hints(target).get(params[0])
    args = typing.get_args(hint) if hint is not None else ()
    if not args:
        return None
    config = args[0]
    if config is Any or config is dict or _origin(config) in (dict, Mapping):
        return None
    if isinstance(config, type) and dataclasses.is_dataclass(config):
        return config
    raise TypeError(f"Context[{_name(config)}]: the config type must be a dataclass or a dict")


def build_config(cls: type[T], data: Mapping[str, Any]) -> T:
    """An instance of the dataclass `cls` built from `data`; ConfigError names what is wrong."""
    if not isinstance(data, Mapping):
        raise ConfigError("", f"expected an object, got {_kind(data)}")
    return typing.cast(T, _dataclass(cls, data, ""))


def typed_config(tool: Callable[..., object], raw: Mapping[str, Any]) -> Any:
    """The configuration `tool` takes: its Config dataclass built from `raw`, or `raw` itself
    when the tool takes a plain dict."""
    config_type = config_type_of(tool)
    if config_type is None:
        return raw
    return build_config(config_type, raw)


def _dataclass(cls: type[Any], data: Mapping[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(_join(path, str(key)), "unknown key")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        where = _join(path, name)
        if name in data:
            values[name] = _convert(hints.get(name, Any), data[name], where)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(where, "required field is missing")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a __post_init__ that validates
        raise ConfigError(path, str(exc)) from exc


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = _origin(hint)
    if hint is Any or hint is object:
        return value
    if origin is Union or origin is types.UnionType:
        return _union(typing.get_args(hint), value, path)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        for choice in choices:
            if value == choice and type(value) is type(choice):
                return choice
            is_int = isinstance(choice, int) and not isinstance(choice, bool)
            if is_int and _integral(value) and int(value) == choice:
                return choice
        raise ConfigError(path, f"must be one of {list(choices)!r}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(path, f"expected null, got {_kind(value)}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected an object, got {_kind(value)}")
        return _dataclass(hint, value, path)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum(hint, value, path)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected a boolean, got {_kind(value)}")
    if hint is int:
        if _integral(value):
            return int(value)
        raise ConfigError(path, f"expected an integer, got {_kind(value)} {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(path, f"expected a number, got {_kind(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"expected a string, got {_kind(value)}")
    if origin in (list, Sequence, tuple) or hint in (list, tuple):
        return _sequence(hint, origin or hint, value, path)
    if origin in (dict, Mapping) or hint is dict:
        return _mapping(hint, value, path)
    raise ConfigError(path, f"unsupported field type {hint!r}")


def _union(options: tuple[Any, ...], value: Any, path: str) -> Any:
    if value is None and type(None) in options:
        return None
    errors: list[ConfigError] = []
    # Try exact kinds first, so that `int | str` keeps "3" a string and 3.0 an int.
    for option in sorted(options, key=lambda o: 0 if o in (bool, int) else 1):
        if option is type(None):
            continue
        try:
            return _convert(option, value, path)
        except ConfigError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    raise ConfigError(path, f"does not match any of {[_name(o) for o in options]}: {value!r}")


def _sequence(hint: Any, origin: Any, value: Any, path: str) -> Any:
    if not isinstance(value, list | tuple):
        raise ConfigError(path, f"expected an array, got {_kind(value)}")
    args = typing.get_args(hint)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if args:
            if len(args) != len(value):
                raise ConfigError(path, f"expected {len(args)} items, got {len(value)}")
            return tuple(
                _convert(a, v, f"{path}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        return tuple(value)
    item = args[0] if args else Any
    return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]


def _mapping(hint: Any, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected an object, got {_kind(value)}")
    args = typing.get_args(hint)
    item = args[1] if len(args) == 2 else Any
    return {str(k): _convert(item, v, _join(path, str(k))) for k, v in value.items()}


def _enum(hint: type[enum.Enum], value: Any, path: str) -> enum.Enum:
    for member in hint:
        if member.value == value or (isinstance(value, str) and member.name == value):
            return member
    if _integral(value):
        for member in hint:
            if member.value == int(value):
                return member
    names = [m.value for m in hint]
    raise ConfigError(path, f"must be one of {names!r}, got {value!r}")


def _integral(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def _origin(hint: Any) -> Any:
    return typing.get_origin(hint)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", repr(hint))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__
