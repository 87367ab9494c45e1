"""Structured run errors the engine proposes (DESIGN.md §4): a named reason, the phase the run
was in, and for tool exceptions the exception type, message, formatted traceback and the runtime
context (python version, host, pid). Kind and retry-safety follow from the reason
(flnet.lifecycle.make_error)."""

from __future__ import annotations

import errno
import os
import platform
import resource
import socket
import traceback
from types import TracebackType

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc

from .config import ConfigError

R = lc.ErrorReason
S = lc.RunState


class Cancelled(Exception):
    """Raised by `Context.check_cancelled()` once the run is cancelled. A tool may also raise
    it itself to stop early after seeing `ctx.cancelled`."""


class InvalidInput(Exception):
    """Raised by a tool whose input is not what it can use (a malformed row, a missing
    column): the run ends INPUT_INVALID, the user's fault, with this message and no
    traceback. `input` names the declared input, when one is at fault."""

    def __init__(self, message: str, *, input: str = "") -> None:
        super().__init__(message)
        self.input = input


class InvalidConfig(Exception):
    """Raised by a tool that finds, while it runs, a configuration its schema let through
    but it cannot use (two settings that contradict each other): the run ends CONFIG_INVALID,
    the user's fault, with this message and no traceback. `path` names the setting
    ("model.depth"), when one is at fault."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ToolLoadError(Exception):
    """The tool's entrypoint cannot be loaded; `error` is what the engine proposes."""

    def __init__(self, error: lc.RunError) -> None:
        super().__init__(error.message)
        self.error = error


def runtime_context(**extra: object) -> dict[str, str]:
    """Where the engine runs: python version, host name, pid (plus `extra`)."""
    context = {
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "pid": str(os.getpid()),
    }
    context.update({k: str(v) for k, v in extra.items()})
    return context


def exception_type_name(exc: BaseException) -> str:
    """'ValueError' for builtins, 'package.module.Error' otherwise."""
    cls = type(exc)
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def format_traceback(exc: BaseException, *, skip_frames: int = 0) -> str:
    """The formatted traceback of `exc`, without the first `skip_frames` frames (the engine's
    own frames that called the tool)."""
    tb: TracebackType | None = exc.__traceback__
    for _ in range(skip_frames):
        if tb is None or tb.tb_next is None:
            break
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def error_from_exception(
    exc: BaseException,
    *,
    phase: int,
    reason: int = R.ERROR_REASON_TOOL_EXCEPTION,
    skip_frames: int = 0,
) -> lc.RunError:
    """ERROR(reason) for an exception the tool raised: type, message, traceback, phase and
    runtime context. The limits the platform sets are named: a MemoryError under an
    address-space cap (the process backend without a cgroup: nothing was killed) or without
    one, and a full disk (the run's writable space)."""
    message = str(exc) or exception_type_name(exc)
    if isinstance(exc, InvalidInput | InvalidConfig):
        return _users_fault(exc, message, phase)
    if isinstance(exc, MemoryError):
        cap = _address_space_cap()
        if cap is not None:
            reason = R.ERROR_REASON_ADDRESS_SPACE_EXHAUSTED
            message = f"an allocation exceeded the address-space cap of {cap} bytes ({message})"
        else:
            reason = R.ERROR_REASON_OOM_KILLED
            message = f"the tool ran out of memory ({message})"
    elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = R.ERROR_REASON_DISK_LIMIT_EXCEEDED
        message = f"the run filled its writable space ({message})"
    return lifecycle.make_error(
        reason,
        message,
        phase=phase,
        error_type=exception_type_name(exc),
        traceback=format_traceback(exc, skip_frames=skip_frames),
        context=runtime_context(),
    )


def _users_fault(exc: InvalidInput | InvalidConfig, message: str, phase: int) -> lc.RunError:
    """What the tool said of its user's input or configuration: the message, where it is
    at fault, no traceback (nothing in the tool went wrong)."""
    if isinstance(exc, InvalidInput):
        reason, where = R.ERROR_REASON_INPUT_INVALID, {"input": exc.input}
    else:
        reason, where = R.ERROR_REASON_CONFIG_INVALID, {"path": exc.path}
    return lifecycle.make_error(
        reason,
        message,
        phase=phase,
        error_type=type(exc).__name__,
        context={**{k: v for k, v in where.items() if v}, **runtime_context()},
    )


def _address_space_cap() -> int | None:
    """The process's RLIMIT_AS, when one is set."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def config_error(exc: ConfigError, *, phase: int) -> lc.RunError:
    """ERROR(CONFIG_INVALID) naming the offending key path."""
    return lifecycle.make_error(
        R.ERROR_REASON_CONFIG_INVALID,
        f"invalid configuration: {exc}",
        phase=phase,
        error_type="ConfigError",
        context={"path": exc.path, **runtime_context()},
    )


def simple_error(reason: int, message: str, *, phase: int, **context: object) -> lc.RunError:
    """ERROR(reason) with a message and the runtime context."""
    return lifecycle.make_error(reason, message, phase=phase, context=runtime_context(**context))
