"""The engine's settings, read once at start: from the environment the orchestrator sets
(`python -m flnet.runtime`) or built directly by a caller (`flnet dev connect`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flnet import resource_names
from flnet.runtime.telemetry import LINGER_SECONDS

# A whole run name, in the grammar of the contracts (the engine checks the run of each
# Execute command with it too).
RUN_NAME = resource_names.RUN.regex

# name -> what it must hold (for the error message)
REQUIRED_ENV: dict[str, str] = {
    "FLNET_RUN": f"the run's resource name, '{resource_names.RUN.pattern}'",
    "FLNET_CONTROL_ADDRESS": "the control plane's gRPC target, e.g. '127.0.0.1:50051' or "
    "'unix:///path/to/socket'",
    "FLNET_CREDENTIAL_FILE": "the path of the file holding the run credential",
    "FLNET_TOOL_DIR": "the tool's directory",
    "FLNET_ENTRYPOINT": "the tool's entrypoint, 'file.py:function' relative to FLNET_TOOL_DIR",
}
OPTIONAL_ENV: dict[str, str] = {
    "FLNET_INPUT_DIR": "where inputs are staged (default /mnt/input)",
    "FLNET_OUTPUT_DIR": "where the tool writes outputs (default /mnt/output)",
    "FLNET_RECONNECT_TIMEOUT": "seconds to keep reconnecting before giving up (default 300)",
    "FLNET_LOG_LEVEL": "lowest level of the tool's log records sent (default INFO)",
    "FLNET_ASSIGNMENT": "a FIFO to wait on, started ahead of the run (a warm pool's standby "
    "engine): what it reads sets FLNET_RUN",
}


class EngineConfigError(ValueError):
    """The engine's settings are missing or malformed; the message says what to set."""


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine needs to drive one run (or a development session).

    Exactly one of `credential_file` (re-read at each connect, so it may rotate) and
    `credential` (the token itself) must be given. `tool` skips loading `entrypoint` from
    `tool_dir` and runs this function instead.
    """

    run: str
    control_address: str
    tool_dir: Path
    entrypoint: str = "tool.py:main"
    credential_file: Path | None = None
    credential: str | None = None
    input_dir: Path = Path("/mnt/input")
    output_dir: Path = Path("/mnt/output")
    reconnect_timeout: float = 300.0
    welcome_timeout: float = 30.0
    flush_timeout: float = 5.0
    max_batch_entries: int = 1000
    linger: float = LINGER_SECONDS
    max_unacked_batches: int = 100
    log_level: int = logging.INFO
    handle_signals: bool = True
    tool: Callable[[Any], object] | None = None

    def __post_init__(self) -> None:
        if not RUN_NAME.fullmatch(self.run):
            raise EngineConfigError(f"run {self.run!r} is not '{resource_names.RUN.pattern}'")
        if not self.control_address:
            raise EngineConfigError("control_address is empty")
        if (self.credential_file is None) == (self.credential is None):
            raise EngineConfigError("give exactly one of credential_file and credential")
        if self.reconnect_timeout <= 0 or self.linger < 0 or self.max_batch_entries < 1:
            raise EngineConfigError("reconnect_timeout, linger and max_batch_entries are too small")

    def read_credential(self) -> str:
        """The run credential (never log it). OSError when the file cannot be read,
        EngineConfigError when it is empty."""
        if self.credential is not None:
            token = self.credential.strip()
        else:
            assert self.credential_file is not None
            token = Path(self.credential_file).read_text(encoding="utf-8").strip()
        if not token:
            raise EngineConfigError("the run credential is empty")
        return token

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineConfig:
        """Settings from the FLNET_* variables; EngineConfigError lists every problem."""
        env = os.environ if environ is None else environ
        problems = [
            f"{name} is not set: it must hold {what}"
            for name, what in REQUIRED_ENV.items()
            if not env.get(name, "").strip()
        ]
        if problems:
            raise EngineConfigError("; ".join(problems))
        credential_file = Path(env["FLNET_CREDENTIAL_FILE"])
        if not credential_file.is_file():
            problems.append(f"FLNET_CREDENTIAL_FILE={credential_file} is not a readable file")
        tool_dir = Path(env["FLNET_TOOL_DIR"])
        if not tool_dir.is_dir():
            problems.append(f"FLNET_TOOL_DIR={tool_dir} is not a directory")
        reconnect = 300.0
        raw_reconnect = env.get("FLNET_RECONNECT_TIMEOUT", "").strip()
        if raw_reconnect:
            try:
                reconnect = float(raw_reconnect)
            except ValueError:
                problems.append(f"FLNET_RECONNECT_TIMEOUT={raw_reconnect!r} is not a number")
        level = logging.INFO
        raw_level = env.get("FLNET_LOG_LEVEL", "").strip().upper()
        if raw_level:
            named = logging.getLevelName(raw_level)
            if isinstance(named, int):
                level = named
            else:
                problems.append(f"FLNET_LOG_LEVEL={raw_level!r} is not a logging level")
        if problems:
            raise EngineConfigError("; ".join(problems))
        try:
            return cls(
                run=env["FLNET_RUN"].strip(),
                control_address=env["FLNET_CONTROL_ADDRESS"].strip(),
                tool_dir=tool_dir,
                entrypoint=env["FLNET_ENTRYPOINT"].strip(),
                credential_file=credential_file,
                input_dir=Path(env.get("FLNET_INPUT_DIR") or "/mnt/input"),
                output_dir=Path(env.get("FLNET_OUTPUT_DIR") or "/mnt/output"),
                reconnect_timeout=reconnect,
                log_level=level,
            )
        except EngineConfigError as exc:
            raise EngineConfigError(f"FLNET_* settings: {exc}") from exc
