"""tool.yaml: the contract a tool author writes, turned into a ToolVersion message."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flnet.api.common.v1 import io_pb2
from flnet.api.control.v1 import tool_pb2 as tp


class ToolSpecError(ValueError):
    pass


@dataclass(frozen=True)
class ToolSpec:
    name: str
    version: tp.ToolVersion


_TIMEOUTS = {
    "deadline_seconds": "deadline",
    "inactivity_seconds": "inactivity",
    "connect_seconds": "connect",
    "cancel_grace_seconds": "cancel_grace",
}


def _io(items: Any, where: str) -> list[io_pb2.IoSpec]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise ToolSpecError(f"{where} must be a list")
    return [
        io_pb2.IoSpec(
            name=str(i["name"]),
            media_type=str(i.get("media_type", "application/octet-stream")),
            required=bool(i.get("required", False)),
            max_size_bytes=int(i.get("max_size_bytes", 0)),
            description=str(i.get("description", "")),
        )
        for i in items
    ]


def load_tool_spec(path: Path) -> ToolSpec:
    """Reads `path` (a tool.yaml, or a directory holding one) into a ToolVersion that runs
    from local source (the process backend)."""
    path = path.resolve()
    if path.is_dir():
        path = path / "tool.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ToolSpecError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ToolSpecError(f"{path} must hold a mapping")
    for key in ("name", "version", "entrypoint", "config_schema"):
        if key not in data:
            raise ToolSpecError(f"{path}: '{key}' is required")
    version = tp.ToolVersion(
        version=str(data["version"]),
        kind=str(data.get("kind", "")),
        description=str(data.get("description", "")).strip(),
        local_source=tp.LocalSource(path=str(path.parent), entrypoint=str(data["entrypoint"])),
        inputs=_io(data.get("inputs"), "inputs"),
        outputs=_io(data.get("outputs"), "outputs"),
    )
    version.config_schema.update(data["config_schema"])
    res = data.get("resources") or {}
    version.resources.CopyFrom(
        tp.Resources(
            cpu_millis=int(res.get("cpu_millis", 0)),
            memory_bytes=int(res.get("memory_bytes", 0)),
            pids=int(res.get("pids", 0)),
        )
    )
    for key, field in _TIMEOUTS.items():
        value = (data.get("timeouts") or {}).get(key)
        if value is not None:
            getattr(version.timeouts, field).FromNanoseconds(int(float(value) * 1e9))
    return ToolSpec(name=str(data["name"]), version=version)
