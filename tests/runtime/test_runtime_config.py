"""Typed run configuration: the run's config dict becomes the tool's Config dataclass."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from google.protobuf import struct_pb2

from flnet.runtime import Context, build_config
from flnet.runtime.config import ConfigError, config_type_of
from flnet.structs import struct_to_dict


@dataclass
class Optimizer:
    name: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = 0.1


@dataclass
class Layer:
    units: int
    activation: str = "relu"


class Mode(enum.Enum):
    FAST = "fast"
    EXACT = "exact"


@dataclass
class Config:
    epochs: int
    optimizer: Optimizer = field(default_factory=Optimizer)
    layers: list[Layer] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    mode: Mode = Mode.FAST
    ratio: float = 0.5
    verbose: bool = False


def test_integral_floats_become_ints_and_nested_dicts_dataclasses() -> None:
    # A Struct holds every number as a double.
    struct = struct_pb2.Struct()
    struct.update(
        {
            "epochs": 10,
            "optimizer": {"name": "adam", "learning_rate": 1},
            "layers": [{"units": 64}, {"units": 8, "activation": "tanh"}],
            "seed": 42,
            "mode": "exact",
            "ratio": 1,
        }
    )
    raw = struct_to_dict(struct)
    assert raw["epochs"] == 10 and isinstance(raw["epochs"], int)  # normalized on arrival
    raw["epochs"] = 10.0  # and build_config copes with doubles that reach it all the same

    config = build_config(Config, raw)

    assert config.epochs == 10 and type(config.epochs) is int
    assert config.optimizer == Optimizer(name="adam", learning_rate=1.0)
    assert type(config.optimizer.learning_rate) is float
    assert config.layers == [Layer(64), Layer(8, "tanh")]
    assert type(config.layers[0].units) is int
    assert config.seed == 42 and type(config.seed) is int
    assert config.mode is Mode.EXACT
    assert config.ratio == 1.0 and type(config.ratio) is float


def test_defaults_fill_missing_optional_fields() -> None:
    config = build_config(Config, {"epochs": 3})
    assert config == Config(epochs=3)
    assert config.optimizer is not Config(epochs=3).optimizer  # default_factory, not shared


@pytest.mark.parametrize(
    ("data", "path", "problem"),
    [
        ({"epochs": 1, "epoch": 2}, "epoch", "unknown key"),
        ({"epochs": 1, "optimizer": {"nme": "sgd"}}, "optimizer.nme", "unknown key"),
        (
            {"epochs": 1, "layers": [{"units": 1}, {"units": 2, "size": 3}]},
            "layers[1].size",
            "unknown key",
        ),
        ({}, "epochs", "required field is missing"),
        (
            {"epochs": 1, "layers": [{"activation": "relu"}]},
            "layers[0].units",
            "required field is missing",
        ),
        ({"epochs": 2.5}, "epochs", "expected an integer"),
        ({"epochs": True}, "epochs", "expected an integer"),
        ({"epochs": "3"}, "epochs", "expected an integer"),
        ({"epochs": 1, "optimizer": {"name": "rmsprop"}}, "optimizer.name", "must be one of"),
        ({"epochs": 1, "optimizer": 3}, "optimizer", "expected an object"),
        ({"epochs": 1, "tags": {"a": 1}}, "tags.a", "expected a string"),
        ({"epochs": 1, "mode": "slow"}, "mode", "must be one of"),
        ({"epochs": 1, "verbose": 1}, "verbose", "expected a boolean"),
    ],
)
def test_errors_name_the_key_path(data: dict[str, Any], path: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(Config, data)
    assert caught.value.path == path
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{path}: ")


def test_post_init_validation_is_a_config_error() -> None:
    @dataclass
    class Checked:
        fraction: float = 0.5

        def __post_init__(self) -> None:
            if not 0 <= self.fraction <= 1:
                raise ValueError("fraction must be between 0 and 1")

    with pytest.raises(ConfigError, match="fraction must be between 0 and 1"):
        build_config(Checked, {"fraction": 2})


def _typed(ctx: Context[Config]) -> None: ...


def _plain(ctx: Context[dict[str, Any]]) -> None: ...


def _bare(ctx: Context) -> None:  # type: ignore[type-arg]
    ...


def _unannotated(ctx):  # type: ignore[no-untyped-def]
    ...


def _bad(ctx: Context[int]) -> None: ...


def test_config_type_comes_from_the_context_annotation() -> None:
    assert config_type_of(_typed) is Config
    assert config_type_of(_plain) is None
    assert config_type_of(_bare) is None
    assert config_type_of(_unannotated) is None
    with pytest.raises(TypeError, match="dataclass"):
        config_type_of(_bad)
