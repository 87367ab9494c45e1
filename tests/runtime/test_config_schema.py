"""The configuration schema derived from the tool's Config dataclass (issue 13, item 3): the
author writes the class once; tool.yaml adds what a type cannot say."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema

from flnet.runtime.config_schema import merged, schema_of


class Metric(enum.Enum):
    EUCLID = "euclid"
    COSINE = "cosine"


@dataclass
class Init:
    method: Literal["random", "kmeans++"] = "kmeans++"
    tries: int = 10


@dataclass
class Config:
    k: int
    tolerance: float = 1e-4
    columns: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    metric: Metric = Metric.EUCLID
    seed: int | None = None
    init: Init = field(default_factory=Init)
    verbose: bool = False
    extra: Any = None


def test_a_schema_from_the_class() -> None:
    assert schema_of(Config) == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "k": {"type": "integer"},
            "tolerance": {"type": "number", "default": 1e-4},
            "columns": {"type": "array", "items": {"type": "string"}, "default": []},
            "weights": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "default": {},
            },
            "metric": {"enum": ["euclid", "cosine"], "default": "euclid"},
            "seed": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "init": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "method": {"enum": ["random", "kmeans++"], "default": "kmeans++"},
                    "tries": {"type": "integer", "default": 10},
                },
                "default": {"method": "kmeans++", "tries": 10},
            },
            "verbose": {"type": "boolean", "default": False},
            "extra": {"default": None},
        },
        "required": ["k"],
    }


def test_the_derived_schema_is_valid_and_judges_configurations() -> None:
    schema = schema_of(Config)
    jsonschema.Draft202012Validator.check_schema(schema)
    valid = jsonschema.Draft202012Validator(schema)
    assert valid.is_valid({"k": 3, "metric": "cosine", "init": {"method": "random"}})
    assert not valid.is_valid({})  # k is required
    assert not valid.is_valid({"k": "three"})
    assert not valid.is_valid({"k": 3, "metric": "manhattan"})
    assert not valid.is_valid({"k": 3, "unknown": 1})


def test_tool_yaml_adds_what_a_type_cannot_say() -> None:
    declared = {
        "properties": {
            "k": {"minimum": 1, "description": "clusters"},
            "tolerance": {"exclusiveMinimum": 0},
        }
    }
    schema = merged(schema_of(Config), declared)
    assert schema["properties"]["k"] == {
        "type": "integer",
        "minimum": 1,
        "description": "clusters",
    }
    assert schema["properties"]["tolerance"]["exclusiveMinimum"] == 0
    assert schema["properties"]["tolerance"]["default"] == 1e-4  # derived, kept
    assert schema["required"] == ["k"]
    # Anything but an object replaces what was derived.
    assert merged({"required": ["k"]}, {"required": []}) == {"required": []}
