"""The run lifecycle of DESIGN.md §4: which transitions are legal, which states are terminal,
and who is at fault for each error reason. Shared by the engine (which proposes transitions)
and the control plane (which validates and records them)."""

from __future__ import annotations

from typing import NamedTuple

from flnet.api.common.v1 import lifecycle_pb2 as lc

S = lc.RunState
R = lc.ErrorReason
K = lc.ErrorKind

TERMINAL: frozenset[int] = frozenset(
    {S.RUN_STATE_FINISHED, S.RUN_STATE_ERROR, S.RUN_STATE_CANCELLED}
)

_FORWARD: dict[int, int] = {
    S.RUN_STATE_PENDING: S.RUN_STATE_INITIALIZED,
    S.RUN_STATE_INITIALIZED: S.RUN_STATE_STARTED,
    S.RUN_STATE_STARTED: S.RUN_STATE_RUNNING,
    S.RUN_STATE_RUNNING: S.RUN_STATE_FINISHED,
}


def is_terminal(state: int) -> bool:
    return state in TERMINAL


def is_legal(from_state: int, to_state: int) -> bool:
    """True when `from_state -> to_state` is one of the lifecycle's transitions."""
    if from_state in TERMINAL or from_state == S.RUN_STATE_UNSPECIFIED:
        return False
    if to_state in (S.RUN_STATE_ERROR, S.RUN_STATE_CANCELLED):
        return True
    return _FORWARD.get(from_state) == to_state


def state_name(state: int) -> str:
    """'RUNNING' for RUN_STATE_RUNNING."""
    return S.Name(S.ValueType(state)).removeprefix("RUN_STATE_")


def reason_name(reason: int) -> str:
    return R.Name(R.ValueType(reason)).removeprefix("ERROR_REASON_")


class Fault(NamedTuple):
    kind: int
    retry_safe: bool


# Who is at fault for each reason, and whether resubmitting the same run may succeed.
FAULTS: dict[int, Fault] = {
    R.ERROR_REASON_CONFIG_INVALID: Fault(K.ERROR_KIND_USER, False),
    R.ERROR_REASON_INPUT_INVALID: Fault(K.ERROR_KIND_USER, False),
    R.ERROR_REASON_TOOL_EXCEPTION: Fault(K.ERROR_KIND_TOOL, False),
    R.ERROR_REASON_OOM_KILLED: Fault(K.ERROR_KIND_TOOL, False),
    R.ERROR_REASON_EXIT_NONZERO: Fault(K.ERROR_KIND_TOOL, False),
    R.ERROR_REASON_DEADLINE_EXCEEDED: Fault(K.ERROR_KIND_TOOL, False),
    R.ERROR_REASON_INACTIVITY_TIMEOUT: Fault(K.ERROR_KIND_TOOL, True),
    R.ERROR_REASON_CONNECT_TIMEOUT: Fault(K.ERROR_KIND_INFRASTRUCTURE, True),
    R.ERROR_REASON_LOST: Fault(K.ERROR_KIND_INFRASTRUCTURE, True),
    R.ERROR_REASON_OUTPUT_MISSING: Fault(K.ERROR_KIND_TOOL, False),
    R.ERROR_REASON_OUTPUT_INVALID: Fault(K.ERROR_KIND_TOOL, False),
    R.ERROR_REASON_IMAGE_MISSING: Fault(K.ERROR_KIND_PLATFORM, False),
    R.ERROR_REASON_POLICY_DENIED: Fault(K.ERROR_KIND_USER, False),
    R.ERROR_REASON_INTERNAL: Fault(K.ERROR_KIND_PLATFORM, True),
    R.ERROR_REASON_PIDS_LIMIT_EXCEEDED: Fault(K.ERROR_KIND_TOOL, False),
    R.ERROR_REASON_DISK_LIMIT_EXCEEDED: Fault(K.ERROR_KIND_TOOL, False),
    R.ERROR_REASON_ADDRESS_SPACE_EXHAUSTED: Fault(K.ERROR_KIND_TOOL, False),
}


def make_error(
    reason: int, message: str, *, phase: int = S.RUN_STATE_UNSPECIFIED, **fields: object
) -> lc.RunError:
    """A RunError with the kind and retry-safety that belong to `reason`."""
    fault = FAULTS[reason]
    err = lc.RunError(
        reason=R.ValueType(reason),
        kind=K.ValueType(fault.kind),
        retry_safe=fault.retry_safe,
        message=message,
        phase=S.ValueType(phase),
    )
    for key, value in fields.items():
        if key == "context":
            assert isinstance(value, dict)
            err.context.update({str(k): str(v) for k, v in value.items()})
        elif key == "last_output_lines":
            assert isinstance(value, list)
            err.last_output_lines.extend(str(v) for v in value)
        else:
            setattr(err, key, value)
    return err
