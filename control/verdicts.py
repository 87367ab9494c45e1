"""What the control plane decides about a proposed state change, as pure functions.

The store calls them inside the transaction that holds the run's row, with the facts read
there (the recorded state, the outputs uploaded so far), and persists what they decide: the
rules live here, the store only records."""

from __future__ import annotations

from dataclasses import dataclass

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.runtime.v1 import runtime_service_pb2 as rt

S = lc.RunState
R = lc.ErrorReason


@dataclass(frozen=True)
class Outputs:
    """A run's declared required outputs and the outputs it has uploaded."""

    required: frozenset[str]
    present: frozenset[str]

    @property
    def missing(self) -> list[str]:
        return sorted(self.required - self.present)


@dataclass(frozen=True)
class Verdict:
    """A state change to record (`to_state`, with its cause), or a refusal ("" when not)."""

    to_state: int = S.RUN_STATE_UNSPECIFIED
    error: lc.RunError | None = None
    refusal: str = ""


def judge_engine(state: int, proposal: rt.Transition, outputs: Outputs) -> Verdict:
    """An engine's proposed transition from the recorded `state`. A FINISHED becomes
    ERROR(OUTPUT_MISSING) while a required output is missing; an ERROR's fault and retry
    safety follow from its reason (tool code runs in the engine's process: it does not get to
    choose them), and an ERROR without a reason is INTERNAL."""
    refusal = _refusal(state, proposal.to_state)
    if refusal:
        return Verdict(refusal=refusal)
    if proposal.to_state == S.RUN_STATE_FINISHED and outputs.missing:
        return Verdict(
            S.RUN_STATE_ERROR,
            lifecycle.make_error(
                R.ERROR_REASON_OUTPUT_MISSING,
                f"required outputs not uploaded: {', '.join(outputs.missing)}",
                phase=S.RUN_STATE_RUNNING,
            ),
        )
    if proposal.to_state != S.RUN_STATE_ERROR:
        return Verdict(proposal.to_state)
    if not (proposal.HasField("error") and proposal.error.reason):
        message = proposal.error.message or proposal.message or "engine reported an error"
        return Verdict(S.RUN_STATE_ERROR, lifecycle.make_error(R.ERROR_REASON_INTERNAL, message))
    error = lc.RunError()
    error.CopyFrom(proposal.error)
    fault = lifecycle.FAULTS.get(error.reason)
    if fault is not None:
        error.kind = lc.ErrorKind.ValueType(fault.kind)
        error.retry_safe = fault.retry_safe
    return Verdict(S.RUN_STATE_ERROR, error)


def judge_control(state: int, to_state: int, error: lc.RunError | None = None) -> Verdict:
    """A transition the control plane decided (cancel, timeout, container exit): applied when
    the lifecycle allows it; a run that has ended is left as it is."""
    refusal = _refusal(state, to_state)
    return Verdict(refusal=refusal) if refusal else Verdict(to_state, error)


def _refusal(state: int, to_state: int) -> str:
    if lifecycle.is_terminal(state):
        return f"run is already {lifecycle.state_name(state)}"
    if not lifecycle.is_legal(state, to_state):
        return (
            f"illegal transition {lifecycle.state_name(state)} -> {lifecycle.state_name(to_state)}"
        )
    return ""
