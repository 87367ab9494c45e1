"""Loads a tool's entrypoint ("tool.py:main") by file path, with the tool directory on
sys.path so that the tool can import its own helper modules."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.sources import pack_source

from .config import config_type_of
from .errors import ToolLoadError, error_from_exception, simple_error

R = lc.ErrorReason
S = lc.RunState

ToolFunction = Callable[[Any], object]


def parse_entrypoint(entrypoint: str) -> tuple[str, str]:
    """("tool.py", "main") for "tool.py:main"; ValueError when malformed."""
    file, sep, function = entrypoint.rpartition(":")
    if not sep or not file or not function.isidentifier():
        raise ValueError(f"entrypoint {entrypoint!r} is not 'file.py:function'")
    return file, function


def load_module(tool_dir: Path, file: str) -> ModuleType:
    """Imports `tool_dir/file` as a module (registered in sys.modules under its stem, or
    under a unique name if that is taken by another module). Exceptions of the import
    propagate; FileNotFoundError when the file is missing."""
    tool_dir = Path(tool_dir).resolve()
    path = (tool_dir / file).resolve()
    if not path.is_relative_to(tool_dir):
        raise FileNotFoundError(f"{file} is outside the tool directory")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if str(tool_dir) not in sys.path:
        sys.path.insert(0, str(tool_dir))
    name = path.stem if path.stem.isidentifier() else "flnet_tool"
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) != str(path):
        name = f"flnet_tool_{abs(hash(str(path))):x}"
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_entrypoint(tool_dir: Path, entrypoint: str) -> ToolFunction:
    """The tool's function. Raises ToolLoadError carrying the RunError to propose:
    IMAGE_MISSING when the file or function is not there, TOOL_EXCEPTION when importing it
    raises or its Context annotation is unusable."""
    phase = S.RUN_STATE_PENDING
    try:
        file, function_name = parse_entrypoint(entrypoint)
    except ValueError as exc:
        raise ToolLoadError(
            simple_error(R.ERROR_REASON_IMAGE_MISSING, str(exc), phase=phase)
        ) from exc
    try:
        module = load_module(tool_dir, file)
    except FileNotFoundError as exc:
        raise ToolLoadError(
            simple_error(
                R.ERROR_REASON_IMAGE_MISSING,
                f"tool source not found: {exc}",
                phase=phase,
                tool_dir=tool_dir,
                entrypoint=entrypoint,
            )
        ) from exc
    except BaseException as exc:
        error = error_from_exception(exc, phase=phase)
        error.message = f"importing {file} failed: {error.message}"
        raise ToolLoadError(error) from exc
    function = getattr(module, function_name, None)
    if function is None or not callable(function):
        raise ToolLoadError(
            simple_error(
                R.ERROR_REASON_IMAGE_MISSING,
                f"{file} has no function {function_name!r}",
                phase=phase,
                entrypoint=entrypoint,
            )
        )
    check_signature(function)
    return function  # type: ignore[no-any-return]


def check_signature(function: ToolFunction) -> None:
    """Raises ToolLoadError(TOOL_EXCEPTION) when the Context annotation cannot be used."""
    try:
        config_type_of(function)
    except (TypeError, NameError, ValueError) as exc:
        raise ToolLoadError(error_from_exception(exc, phase=S.RUN_STATE_PENDING)) from exc


def reload_tool(tool_dir: Path, entrypoint: str) -> tuple[ToolFunction | ToolLoadError, str]:
    """The tool as `tool_dir` holds it now, with the sha256 of those files (as `flnet tool
    register` packs them): every module imported from the folder is forgotten first, so an
    edited helper is read again too. A development session's runs each get their own."""
    tool_dir = Path(tool_dir).resolve()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(tool_dir):
            del sys.modules[name]
    packed = io.BytesIO()
    pack_source(tool_dir, packed)
    digest = hashlib.sha256(packed.getbuffer()).hexdigest()
    try:
        return load_entrypoint(tool_dir, entrypoint), digest
    except ToolLoadError as exc:
        return exc, digest
