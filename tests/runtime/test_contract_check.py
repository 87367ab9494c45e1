"""A tool checked against its contract before registration (issue 13, item 3): the
entrypoint loads and the schema fits the configuration class, field by field."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flnet.runtime.contract_check import check_tool

TOOL = """
from dataclasses import dataclass, field
from flnet.runtime import Context

@dataclass
class Model:
    depth: int = 3

@dataclass
class Config:
    rate: float
    epochs: int = 10
    label: str = "run"
    tags: list[str] = field(default_factory=list)
    model: Model = field(default_factory=Model)
    seed: int | None = None

def main(ctx: Context[Config]) -> None:
    pass
"""
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rate": {"type": "number"},
        "epochs": {"type": "integer"},
        "label": {"type": "string"},
        "tags": {"type": "array"},
        "model": {"type": "object", "properties": {"depth": {"type": "integer"}}},
        "seed": {"type": "integer"},
    },
    "required": ["rate"],
}


def tool(tmp_path: Path, source: str = TOOL) -> Path:
    where = tmp_path / "tool"
    where.mkdir(exist_ok=True)
    (where / "tool.py").write_text(textwrap.dedent(source))
    return where


def changed(**properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(json.dumps(SCHEMA))
    for name, value in properties.items():
        if value is None:
            del schema["properties"][name]
        else:
            schema["properties"][name] = value
    return schema


def test_a_tool_that_fits_its_contract(tmp_path: Path) -> None:
    assert check_tool(tool(tmp_path), "tool.py:main", SCHEMA) == []


def test_an_entrypoint_typo(tmp_path: Path) -> None:
    [(field, description)] = check_tool(tool(tmp_path), "tool.py:mian", SCHEMA)
    assert field == "entrypoint" and "has no function 'mian'" in description
    [(field, _)] = check_tool(tool(tmp_path), "tol.py:main", SCHEMA)
    assert field == "entrypoint"


def test_an_import_that_fails(tmp_path: Path) -> None:
    [(field, description)] = check_tool(
        tool(tmp_path, "import no_such_module\n"), "tool.py:main", SCHEMA
    )
    assert field == "entrypoint" and "no_such_module" in description


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            changed(learning_rate={"type": "number"}),
            [("config_schema.properties.learning_rate", "Config has no field 'learning_rate'")],
        ),
        (
            changed(epochs={"type": "string"}),
            [("config_schema.properties.epochs.type", "the field is int")],
        ),
        (
            changed(
                model={
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"width": {"type": "integer"}},
                }
            ),
            [
                ("config_schema.properties.model.properties.width", "Model has no field 'width'"),
                ("config_schema.properties.model.properties", "Model.depth is not in the schema"),
            ],
        ),
        (
            changed(rate=None),
            [("config_schema.properties", "Config.rate is not in the schema")],
        ),
        (
            changed(label=None),  # closed: a field no configuration can set
            [("config_schema.properties", "Config.label is not in the schema")],
        ),
    ],
)
def test_a_schema_that_does_not_fit(
    tmp_path: Path, schema: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    problems = check_tool(tool(tmp_path), "tool.py:main", schema)
    assert [field for field, _ in problems] == [field for field, _ in expected]
    for (_, description), (_, fragment) in zip(problems, expected, strict=True):
        assert fragment in description


def test_an_open_schema_may_leave_defaulted_fields_out(tmp_path: Path) -> None:
    schema = changed(label=None)
    schema["additionalProperties"] = True
    assert check_tool(tool(tmp_path), "tool.py:main", schema) == []


def test_a_tool_taking_a_plain_dict_is_not_compared(tmp_path: Path) -> None:
    source = "def main(ctx):\n    pass\n"
    assert check_tool(tool(tmp_path, source), "tool.py:main", changed(anything={})) == []


def test_flnet_tool_check_names_each_field(tmp_path: Path) -> None:
    where = tool(tmp_path)
    contract = {
        "name": "typo",
        "version": "1.0.0",
        "entrypoint": "tool.py:main",
        "config_schema": changed(learning_rate={"type": "number"}),
    }
    (where / "tool.yaml").write_text(json.dumps(contract))  # JSON is YAML
    flnet = [sys.executable, "-m", "flnet.cli.main"]
    done = subprocess.run(
        [*flnet, "tool", "check", str(where)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "does not match its contract" in done.stderr
    assert "config_schema.properties.learning_rate: Config has no field" in done.stderr
    # Registering it is refused before anything is uploaded (no stack is needed to find out).
    done = subprocess.run(
        [*flnet, "--data-dir", str(tmp_path / "none"), "tool", "register", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "config_schema.properties.learning_rate" in done.stderr
    contract["config_schema"] = SCHEMA
    (where / "tool.yaml").write_text(json.dumps(contract))
    done = subprocess.run(
        [*flnet, "-o", "json", "tool", "check", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, json.loads(done.stdout)) == (0, {"problems": []})
