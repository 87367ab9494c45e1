"""Why an engine ended, decided the same way by every backend from what it could observe.
First match wins:

1. killed by the OOM killer for its memory limit: OOM_KILLED;
2. ended by the orchestrator (StopRun, deadline, shutdown, a fork bomb): that cause;
3. ended abnormally (a signal or a non-zero exit code) after its pids limit refused a fork
   or clone: PIDS_LIMIT_EXCEEDED;
4. ended abnormally after its writable space ran out: DISK_LIMIT_EXCEEDED;
5. exit status unknown (the process backend re-attached the engine after a restart, and
   only its parent could learn that): VANISHED;
6. killed by a signal: SIGNALED;
7. otherwise EXITED.

A limit that was reached by a run which then ended cleanly (exit code 0) names nothing: the
engine coped, and the run's own report says how it ended.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backend import ExitCause


@dataclass(frozen=True)
class Observed:
    """What a backend saw of an engine's end."""

    # The exit code, negative for a signal; None when unknown.
    code: int | None
    stop_cause: ExitCause | None = None
    oom_killed: bool = False
    pids_limit_hit: bool = False
    disk_limit_hit: bool = False


def exit_cause(seen: Observed) -> ExitCause:
    """The exit cause of the module doc's rules."""
    abnormal = seen.code != 0
    if seen.oom_killed:
        return ExitCause.OOM_KILLED
    if seen.stop_cause is not None:
        return seen.stop_cause
    if abnormal and seen.pids_limit_hit:
        return ExitCause.PIDS_LIMIT_EXCEEDED
    if abnormal and seen.disk_limit_hit:
        return ExitCause.DISK_LIMIT_EXCEEDED
    if seen.code is None:
        return ExitCause.VANISHED
    return ExitCause.SIGNALED if seen.code < 0 else ExitCause.EXITED
