"""A standby engine: one started ahead of its run, in a container of the docker backend's warm
pool, with everything imported. It waits on a FIFO (FLNET_ASSIGNMENT) until the orchestrator
assigns it a run, then runs exactly that one run. Blocking on the FIFO costs nothing while it
waits; the orchestrator can only hand over to an engine that is reading it (its non-blocking
open fails otherwise), and what it writes, under PIPE_BUF, arrives whole."""

from __future__ import annotations

import json
from collections.abc import Mapping

#: The FIFO a standby engine reads its assignment from.
ASSIGNMENT_ENV = "FLNET_ASSIGNMENT"
#: What an assignment may set: the run (its credential is already in FLNET_CREDENTIAL_FILE).
ASSIGNED = frozenset({"FLNET_RUN"})


class AssignmentError(Exception):
    """The orchestrator went away without assigning a run, or sent something else."""


def wait_for_assignment(fifo: str) -> dict[str, str]:
    """The environment the assignment read from `fifo` adds (blocks until it comes)."""
    with open(fifo, "rb") as pipe:
        data = pipe.read()
    if not data:
        raise AssignmentError("the orchestrator closed the assignment without a run")
    try:
        assignment = json.loads(data)
    except ValueError as exc:
        raise AssignmentError(f"the assignment is not JSON: {exc}") from None
    if not _valid(assignment):
        raise AssignmentError(f"the assignment may set {sorted(ASSIGNED)} only, as strings")
    return dict(assignment)


def _valid(assignment: object) -> bool:
    return (
        isinstance(assignment, Mapping)
        and set(assignment) == ASSIGNED
        and all(isinstance(v, str) and v for v in assignment.values())
    )
