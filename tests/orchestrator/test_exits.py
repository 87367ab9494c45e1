"""How an engine's end is named from what a backend observed (exits.py), case by case."""

from __future__ import annotations

import signal

import pytest

from flnet.orchestrator.backend import ExitCause
from flnet.orchestrator.exits import Observed, exit_cause

E = ExitCause


@pytest.mark.parametrize(
    ("seen", "cause"),
    [
        (Observed(code=0), E.EXITED),
        (Observed(code=3), E.EXITED),
        (Observed(code=-signal.SIGSEGV), E.SIGNALED),
        (Observed(code=None), E.VANISHED),  # the exit status could not be learnt
        # The OOM killer first, whatever else happened.
        (Observed(code=-9, stop_cause=E.STOPPED, oom_killed=True), E.OOM_KILLED),
        (
            Observed(code=-9, stop_cause=E.DEADLINE_EXCEEDED, pids_limit_hit=True),
            E.DEADLINE_EXCEEDED,
        ),
        (Observed(code=None, stop_cause=E.STOPPED), E.STOPPED),
        # A limit reached, then an abnormal end: the limit is named.
        (Observed(code=-signal.SIGABRT, pids_limit_hit=True), E.PIDS_LIMIT_EXCEEDED),
        (Observed(code=1, disk_limit_hit=True), E.DISK_LIMIT_EXCEEDED),
        (Observed(code=None, pids_limit_hit=True), E.PIDS_LIMIT_EXCEEDED),
        (Observed(code=1, pids_limit_hit=True, disk_limit_hit=True), E.PIDS_LIMIT_EXCEEDED),
        # A limit reached by a run that then ended cleanly names nothing.
        (Observed(code=0, pids_limit_hit=True, disk_limit_hit=True), E.EXITED),
    ],
)
def test_exit_causes(seen: Observed, cause: ExitCause) -> None:
    assert exit_cause(seen) == cause
