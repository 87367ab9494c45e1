"""A tool against its contract, where its author works: the configuration schema derived
from the tool's `Config` dataclass with tool.yaml's `config_schema` merged over it
(flnet.runtime.config_schema), and the tool checked against the result
(flnet.runtime.contract_check). `flnet tool check|schema|register` use it; the control plane
never imports a tool's code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flnet.runtime.config import config_type_of
from flnet.runtime.config_schema import merged, schema_of
from flnet.runtime.contract_check import check_tool
from flnet.runtime.errors import ToolLoadError
from flnet.runtime.loader import load_entrypoint
from flnet.structs import struct_to_dict
from flnet.toolspec import ToolSpec, load_tool_spec


class ContractError(ValueError):
    """The tool does not match its tool.yaml; the message lists each field at fault."""

    def __init__(self, path: Path, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {field}: {description}" for field, description in problems)
        super().__init__(f"{path} does not match its contract:\n{lines}")


def config_schema(path: Path, spec: ToolSpec) -> dict[str, Any]:
    """tool.yaml's config_schema over the one derived from the tool's Config dataclass (a
    tool taking a plain dict gets tool.yaml's alone, which it must then have)."""
    declared = struct_to_dict(spec.version.config_schema)
    try:
        config = config_type_of(load_entrypoint(spec.directory, spec.entrypoint))
    except ToolLoadError as exc:
        raise ContractError(path, [("entrypoint", exc.error.message)]) from None
    if config is None:
        if not declared:
            problem = "the tool takes a plain dict: tool.yaml must give its schema"
            raise ContractError(path, [("config_schema", problem)])
        return declared
    return merged(schema_of(config), declared)


def checked(path: Path) -> tuple[ToolSpec, dict[str, Any]]:
    """The tool's spec and configuration schema; ContractError naming each field at fault."""
    spec = load_tool_spec(path)
    schema = config_schema(path, spec)
    problems = check_tool(spec.directory, spec.entrypoint, schema)
    if problems:
        raise ContractError(path, problems)
    return spec, schema
