"""The environment contract between the orchestrator and the engine (flnet.runtime).
Every backend gives the engine exactly these variables, plus the request's extra
environment, plus a small allowlist of the orchestrator's own basics. Nothing else of the
orchestrator's environment is passed on, so its secrets stay with it; the run credential
travels as a file only (FLNET_CREDENTIAL_FILE), never as a variable or an argument."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import FieldViolation, InvalidArgument, Reason

FLNET_RUN = "FLNET_RUN"  # "tenants/{tenant}/runs/{run}"
FLNET_CONTROL_ADDRESS = "FLNET_CONTROL_ADDRESS"  # where the engine dials the control plane
FLNET_CREDENTIAL_FILE = "FLNET_CREDENTIAL_FILE"  # read-only file holding the run credential
FLNET_TOOL_DIR = "FLNET_TOOL_DIR"  # tool source directory
FLNET_ENTRYPOINT = "FLNET_ENTRYPOINT"  # "file.py:function", relative to the tool dir
FLNET_INPUT_DIR = "FLNET_INPUT_DIR"  # where inputs are staged
FLNET_OUTPUT_DIR = "FLNET_OUTPUT_DIR"  # where the tool writes outputs
FLNET_ASSIGNMENT = "FLNET_ASSIGNMENT"  # a standby engine's FIFO (flnet.runtime.standby)

#: Set by the orchestrator; a request's environment may not override them.
RESERVED: frozenset[str] = frozenset(
    {
        FLNET_RUN,
        FLNET_CONTROL_ADDRESS,
        FLNET_CREDENTIAL_FILE,
        FLNET_TOOL_DIR,
        FLNET_ENTRYPOINT,
        FLNET_INPUT_DIR,
        FLNET_OUTPUT_DIR,
        FLNET_ASSIGNMENT,
    }
)

#: Basics copied from the orchestrator's own environment when set there.
PASSTHROUGH: tuple[str, ...] = (
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
)

#: Defaults the request's environment may override. Unbuffered output keeps the last lines
#: of a killed engine in its log.
DEFAULTS: Mapping[str, str] = {"PYTHONUNBUFFERED": "1"}

#: Defaults in a container, whose root file system is read-only: no bytecode caches either.
CONTAINER_DEFAULTS: Mapping[str, str] = {**DEFAULTS, "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass(frozen=True)
class EnginePaths:
    """Where the engine finds its files, as seen from inside the process or container."""

    tool_dir: str
    credential_file: str
    input_dir: str
    output_dir: str


def validate_extra_environment(environment: Mapping[str, str]) -> None:
    """Raises InvalidArgument for names that are empty, malformed or reserved, and for
    values holding NUL bytes."""
    bad: list[FieldViolation] = []
    for name, value in environment.items():
        where = f"environment[{name}]"
        if not name or "=" in name or "\0" in name:
            bad.append(FieldViolation(where, "not a valid variable name"))
        elif name in RESERVED:
            bad.append(FieldViolation(where, "is set by the orchestrator"))
        elif "\0" in value:
            bad.append(FieldViolation(where, "value holds a NUL byte"))
    if bad:
        raise InvalidArgument(
            "environment holds variables the engine cannot get",
            Reason.ENVIRONMENT_INVALID,
            violations=bad,
        )


def engine_environment(
    *,
    run: str,
    control_address: str,
    entrypoint: str,
    paths: EnginePaths,
    extra: Mapping[str, str],
    base: Mapping[str, str],
    defaults: Mapping[str, str] = DEFAULTS,
) -> dict[str, str]:
    """The engine's complete environment: allowlisted basics of `base`, `defaults`, `extra`,
    then the FLNET_* contract (which always wins)."""
    env = {name: base[name] for name in PASSTHROUGH if name in base}
    env.update(defaults)
    env.update(extra)
    env.update(
        {
            FLNET_RUN: run,
            FLNET_CONTROL_ADDRESS: control_address,
            FLNET_CREDENTIAL_FILE: paths.credential_file,
            FLNET_TOOL_DIR: paths.tool_dir,
            FLNET_ENTRYPOINT: entrypoint,
            FLNET_INPUT_DIR: paths.input_dir,
            FLNET_OUTPUT_DIR: paths.output_dir,
        }
    )
    return env
