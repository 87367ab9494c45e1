"""Run configuration: JSON Schema validation (draft 2020-12) with defaults filled in, field
paths for violations, and the canonical form whose sha256 provenance records.

A schema can be valid JSON Schema and still impossible to evaluate: a `$ref` that resolves
nowhere (no schema is ever fetched) or a cycle of references (`{"$ref": "#"}`) raise inside
jsonschema. `check_schema` refuses what shows on an empty configuration; `validate_config`
turns the rest into FAILED_PRECONDITION (the tool version's fault, not the request's)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError
from referencing.exceptions import Unresolvable

from flnet.control.patterns import check_patterns, linear_time
from flnet.control.reasons import Reason
from flnet.errors import FailedPrecondition, InvalidArgument
from flnet.structs import check_finite, dict_to_struct, normalize, struct_to_dict

__all__ = [
    "canonical_json",
    "canonical_sha256",
    "check_finite",
    "check_schema",
    "dict_to_struct",
    "struct_to_dict",
    "validate_config",
]


def _with_defaults(cls: Any) -> Any:
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(
        validator: Any, properties: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
    ) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})  # type: ignore[no-untyped-call]


_DefaultingValidator = _with_defaults(linear_time(Draft202012Validator))


def canonical_json(value: Any) -> str:
    return json.dumps(
        normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical_sha256(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def check_schema(schema: Mapping[str, Any], field: str) -> None:
    """Raises InvalidArgument when `schema` is not a valid draft 2020-12 JSON Schema, holds
    a regular expression RE2 cannot evaluate (control.patterns), or cannot evaluate an empty
    configuration."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        path = "".join(_path_part(p) for p in e.absolute_path)
        raise InvalidArgument(
            f"{field}{path}: not a valid JSON Schema: {e.message}",
            violations=[(f"{field}{path}", e.message)],
        ) from None
    check_patterns(schema, field)
    problem = _unevaluable(schema, {})
    if problem:
        raise InvalidArgument.field(field, f"cannot be evaluated: {problem}")


def _unevaluable(schema: Mapping[str, Any], instance: Any) -> str | None:
    """Why `schema` cannot evaluate `instance`, if it cannot."""
    try:
        for _ in _DefaultingValidator(schema).iter_errors(copy.deepcopy(instance)):
            pass
    except Unresolvable as e:
        return f"unresolvable $ref {e.ref!r}"
    except RecursionError:
        return "its references recurse without end"
    return None


def _path_part(p: str | int) -> str:
    return f"[{p}]" if isinstance(p, int) else f".{p}"


def _violations(err: ValidationError, field: str) -> list[tuple[str, str]]:
    base = field + "".join(_path_part(p) for p in err.absolute_path)
    if err.validator == "required" and isinstance(err.instance, dict):
        required: list[str] = list(err.validator_value)  # type: ignore[arg-type]
        missing = [r for r in required if r not in err.instance]
        return [(f"{base}.{m}", f"'{m}' is required") for m in missing]
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        schema: Any = err.schema
        known = set(schema.get("properties", {}))
        extra = [k for k in err.instance if k not in known]
        return [(f"{base}.{k}", f"'{k}' is not a known setting") for k in extra]
    return [(base, err.message)]


def validate_config(
    schema: Mapping[str, Any], config: Mapping[str, Any], field: str = "run.config"
) -> dict[str, Any]:
    """Returns the configuration with schema defaults filled in, or raises InvalidArgument
    listing every violation with its field path (e.g. `run.config.epochs`)."""
    effective = normalize(copy.deepcopy(dict(config)))
    try:
        errors = sorted(
            _DefaultingValidator(schema).iter_errors(effective),
            key=lambda e: list(map(str, e.absolute_path)),
        )
    except (Unresolvable, RecursionError):
        problem = _unevaluable(schema, effective) or "it failed to evaluate"
        raise FailedPrecondition(
            f"the tool version's config schema cannot be evaluated: {problem}",
            Reason.CONFIG_INVALID,
        ) from None
    if errors:
        violations: list[tuple[str, str]] = []
        for err in errors:
            violations.extend(_violations(err, field))
        summary = "; ".join(f"{f}: {d}" for f, d in violations[:5])
        raise InvalidArgument(
            f"configuration does not match the tool's schema: {summary}",
            reason=Reason.CONFIG_INVALID,
            violations=violations,
        )
    return effective  # type: ignore[no-any-return]
