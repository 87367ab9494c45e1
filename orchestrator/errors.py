"""Domain errors of the orchestrator: the platform's shared errors (flnet.errors), with the
orchestrator's reasons. flnet.server.interceptors.ErrorMapper turns them into statuses."""

from __future__ import annotations

from flnet.api.orchestrator.v1 import errors_pb2
from flnet.errors import FieldViolation, Internal, InvalidArgument, NotFound, Unavailable
from flnet.errors import FlnetError as OrchestratorError
from flnet.reasons import Reasons

#: `ErrorInfo.domain` of every orchestrator error.
DOMAIN = "flnet.orchestrator"


#: `ErrorInfo.reason` values: why a request failed (documented in the contract).
Reason = Reasons(errors_pb2.OrchestratorErrorReason.DESCRIPTOR)


class LaunchFailed(Internal):
    """The backend could not start the container for a reason of its own."""


__all__ = [
    "DOMAIN",
    "FieldViolation",
    "InvalidArgument",
    "LaunchFailed",
    "NotFound",
    "OrchestratorError",
    "Reason",
    "Unavailable",
]
