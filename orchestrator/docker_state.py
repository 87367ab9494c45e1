"""Reading what the Docker engine reports about a run's container (`docker inspect`): why
it ended, when, and the labels the docker backend wrote at launch. Pure functions.

Exit classification: a container gone (removed, or being removed, by someone else) ends
with the orchestrator's stop cause when it had decided to end it, else VANISHED, exit code
0 (unknown); otherwise exits.py's rules decide, State.OOMKilled saying OOM_KILLED, and the
limits the backend saw hit (docker_limits.py) naming PIDS_ or DISK_LIMIT_EXCEEDED.

Exit codes 129..192 are reported as -signal whatever the cause (docker-init, PID 1, exits
with 128 + the signal that killed the engine), as the process backend reports a signal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .backend import ExitCause, RunName
from .docker_container import LABEL_DEADLINE, LABEL_RUN
from .errors import InvalidArgument
from .exits import Observed, exit_cause

#: The last output line of a container removed behind the orchestrator's back.
VANISHED_LINE = (
    "flnet: the container was removed by someone else before the orchestrator saw it end; "
    "its exit code and output are lost"
)
_SIGNAL_BASE = 128
_MAX_SIGNAL = 64
_RUNNING = frozenset({"running", "paused", "restarting"})


def is_running(state: Mapping[str, Any]) -> bool:
    return state.get("Status") in _RUNNING


def is_removing(state: Mapping[str, Any]) -> bool:
    """Someone is removing the container (``docker rm -f``)."""
    return state.get("Status") == "removing"


def exit_of(
    state: Mapping[str, Any] | None,
    stop_cause: ExitCause | None,
    *,
    pids_limit_hit: bool = False,
    disk_limit_hit: bool = False,
) -> tuple[ExitCause, int]:
    """The exit cause and code of an ended container from its inspect State (None: gone)."""
    if state is None or is_removing(state):
        return stop_cause or ExitCause.VANISHED, 0
    code = int(state.get("ExitCode", 0))
    if _SIGNAL_BASE < code <= _SIGNAL_BASE + _MAX_SIGNAL:
        code = _SIGNAL_BASE - code
    seen = Observed(
        code=code,
        stop_cause=stop_cause,
        oom_killed=bool(state.get("OOMKilled")),
        pids_limit_hit=pids_limit_hit,
        disk_limit_hit=disk_limit_hit,
    )
    return exit_cause(seen), code


def _time(value: object) -> datetime | None:
    # Docker writes "0001-01-01T00:00:00Z" for "never".
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value)
    return None


def started_at(state: Mapping[str, Any] | None) -> datetime | None:
    return _time(state.get("StartedAt")) if state else None


def finished_at(state: Mapping[str, Any] | None) -> datetime | None:
    return _time(state.get("FinishedAt")) if state else None


def run_of(labels: Mapping[str, str]) -> RunName | None:
    """The run named by the labels; None when missing or malformed."""
    try:
        return RunName.parse(labels.get(LABEL_RUN, ""))
    except InvalidArgument:
        return None


def deadline_of(labels: Mapping[str, str]) -> datetime | None:
    return _time(labels.get(LABEL_DEADLINE))
