"""Regular expressions in tools' config schemas, evaluated in linear time. A `pattern` such as
`(a+)+$` takes Python's `re` (a backtracking engine) time doubling with each character of the
value: one tenant's schema could stall every call of the control plane. RE2 cannot backtrack;
a pattern it cannot compile (back references, look-around) is refused when the tool version
is registered."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import re2
from jsonschema import ValidationError, validators

from flnet.errors import InvalidArgument


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> Any:
    return re2.compile(pattern)


def check_patterns(schema: Any, field: str) -> None:
    """Raises InvalidArgument naming each regular expression of `schema` that RE2 cannot
    evaluate, and the one combination whose evaluation would fall back to `re`."""
    problems = []
    for path, pattern in _patterns(schema, field):
        try:
            compiled(pattern)
        except re2.error as e:
            problems.append((path, f"{pattern!r} is not a linear-time (RE2) pattern: {e}"))
    if problems:
        summary = "; ".join(f"{f}: {d}" for f, d in problems[:5])
        raise InvalidArgument(f"unsupported regular expressions: {summary}", violations=problems)
    if _uses(schema, "patternProperties") and _uses(schema, "unevaluatedProperties"):
        raise InvalidArgument.field(
            field, "patternProperties and unevaluatedProperties cannot be used together"
        )


def _patterns(schema: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            where = f"{path}.{key}"
            if key == "pattern" and isinstance(value, str):
                yield where, value
            elif key == "patternProperties" and isinstance(value, Mapping):
                for pattern, sub in value.items():
                    yield f"{where}[{pattern!r}]", pattern
                    yield from _patterns(sub, f"{where}[{pattern!r}]")
            elif key not in ("const", "enum", "default", "examples"):
                yield from _patterns(value, where)
    elif isinstance(schema, list):
        for i, item in enumerate(schema):
            yield from _patterns(item, f"{path}[{i}]")


def _uses(schema: Any, keyword: str) -> bool:
    if isinstance(schema, Mapping):
        return keyword in schema or any(_uses(v, keyword) for v in schema.values())
    if isinstance(schema, list):
        return any(_uses(v, keyword) for v in schema)
    return False


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and compiled(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, sub in patterns.items():
        for key, value in instance.items():
            if compiled(pattern).search(key):
                yield from validator.descend(value, sub, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    patterns = [compiled(p) for p in schema.get("patternProperties", {})]
    extras = [
        key for key in instance if key not in known and not any(p.search(key) for p in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        listed = ", ".join(repr(e) for e in sorted(extras, key=str))
        yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


def linear_time(cls: Any) -> Any:
    """`cls` (a jsonschema validator class) with its regular expressions evaluated by RE2."""
    return validators.extend(  # type: ignore[no-untyped-call]
        cls,
        {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        },
    )
