"""What a tool's `main(ctx)` receives: its typed config, logging, metrics and progress that go
to the platform, its staged inputs, its declared outputs, and the cancel signal."""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO, Generic, Literal, TextIO, TypeVar, overload

from .errors import Cancelled
from .telemetry import METRIC, PROGRESS, EntryBuffer, PlatformLogHandler, ToolLogger

C = TypeVar("C")

_FORBIDDEN_IN_NAMES = ("/", "\\", "\0", ":")


def check_io_name(name: str) -> str:
    """Raises ValueError unless `name` can be a file name of its own under the input or output
    directory (no separators, no traversal)."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ValueError(f"invalid input/output name {name!r}")
    if any(c in name for c in _FORBIDDEN_IN_NAMES) or name.startswith("."):
        raise ValueError(f"invalid input/output name {name!r}: it must be a plain file name")
    return name


class Outputs:
    """The run's declared outputs, as files in the output directory. Only declared names are
    accepted; the engine uploads each one that exists when the tool returns."""

    def __init__(self, directory: Path, declared: Iterable[str]) -> None:
        self.directory = Path(directory)
        self.names: frozenset[str] = frozenset(check_io_name(n) for n in declared)

    def path(self, name: str) -> Path:
        """Where output `name` is written: `<output dir>/<name>`."""
        check_io_name(name)
        if name not in self.names:
            declared = ", ".join(sorted(self.names)) or "none"
            raise ValueError(f"{name!r} is not a declared output (declared: {declared})")
        return self.directory / name

    @overload
    def open(
        self,
        name: str,
        mode: Literal["w"] = "w",
        *,
        encoding: str = "utf-8",
        newline: str | None = None,
    ) -> TextIO: ...

    @overload
    def open(
        self, name: str, mode: Literal["wb"], *, encoding: None = None, newline: None = None
    ) -> BinaryIO: ...

    def open(
        self,
        name: str,
        mode: Literal["w", "wb"] = "w",
        *,
        encoding: str | None = "utf-8",
        newline: str | None = None,
    ) -> IO[Any]:
        """Opens output `name` for writing, text ("w", UTF-8) or binary ("wb")."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode == "wb":
            return path.open("wb")
        if mode == "w":
            return path.open("w", encoding=encoding or "utf-8", newline=newline)
        raise ValueError(f"mode must be 'w' or 'wb', not {mode!r}")

    def existing(self) -> dict[str, Path]:
        """Declared outputs whose file exists."""
        return {n: self.directory / n for n in sorted(self.names) if (self.directory / n).is_file()}


class Context(Generic[C]):
    """The tool's handle on its run. `C` is the tool's Config dataclass (or a dict).

    Logging (`ctx.log`, and the root logger in the tool thread), metrics and progress go to the
    platform in order with the run's lifecycle. Thread-safe: a tool may report from its own
    worker threads too (through `ctx.log`, `metric` and `progress`).
    """

    def __init__(
        self,
        *,
        run: str,
        config: C,
        raw_config: Mapping[str, Any],
        inputs: Mapping[str, Path],
        outputs: Outputs,
        buffer: EntryBuffer,
        cancelled: threading.Event | None = None,
        logger_name: str = "tool",
        log_level: int = logging.INFO,
    ) -> None:
        self._run = run
        self._config = config
        self._raw_config = copy.deepcopy(dict(raw_config))
        self._inputs = types.MappingProxyType(dict(inputs))
        self._outputs = outputs
        self._buffer = buffer
        self._cancelled = cancelled if cancelled is not None else threading.Event()
        self.log_handler = PlatformLogHandler(buffer)
        self._log: logging.Logger = ToolLogger(logger_name, self.log_handler, log_level)
        self._steps: dict[str, int] = {}
        self._steps_lock = threading.Lock()

    @property
    def run(self) -> str:
        """The run's resource name, "tenants/{tenant}/runs/{run}"."""
        return self._run

    @property
    def config(self) -> C:
        """The typed configuration (the plain dict when the tool declares no Config type)."""
        return self._config

    @property
    def raw_config(self) -> dict[str, Any]:
        """The configuration as a plain dict (a copy)."""
        return copy.deepcopy(self._raw_config)

    @property
    def log(self) -> logging.Logger:
        """A logger whose records go to the platform (with severity, caller and traceback)."""
        return self._log

    @property
    def inputs(self) -> Mapping[str, Path]:
        """Staged input files by declared name (read-only)."""
        return self._inputs

    @property
    def outputs(self) -> Outputs:
        """Declared outputs: `ctx.outputs.path(name)`, `ctx.outputs.open(name, "w")`."""
        return self._outputs

    @property
    def cancelled(self) -> threading.Event:
        """Set when the run is cancelled; stop soon (return, or raise Cancelled)."""
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raises Cancelled once the run is cancelled."""
        if self._cancelled.is_set():
            raise Cancelled("the run was cancelled")

    def metric(self, name: str, value: float, *, step: int | None = None, unit: str = "") -> None:
        """Records one value of metric `name`. Without `step`, steps count 0, 1, 2, ... per
        name (continuing after the last explicit step)."""
        if not name:
            raise ValueError("a metric needs a name")
        number = float(value)
        with self._steps_lock:
            if step is None:
                step = self._steps.get(name, -1) + 1
            self._steps[name] = int(step)
        self._buffer.append((METRIC, time.time_ns(), name, number, int(step), unit))

    def progress(self, fraction: float, message: str = "") -> None:
        """Reports how far the run has come, 0.0 to 1.0 (clamped)."""
        value = float(fraction)
        if math.isnan(value):
            raise ValueError("progress fraction is NaN")
        self._buffer.append((PROGRESS, time.time_ns(), min(1.0, max(0.0, value)), message))
