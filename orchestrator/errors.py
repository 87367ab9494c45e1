"""Domain errors of the orchestrator: the platform's shared errors (flnet.errors), with the
orchestrator's reasons. flnet.server.interceptors.ErrorMapper turns them into statuses."""

from __future__ import annotations

from enum import StrEnum

from flnet.errors import FieldViolation, Internal, InvalidArgument, NotFound, Unavailable
from flnet.errors import FlnetError as OrchestratorError

#: `ErrorInfo.domain` of every orchestrator error.
DOMAIN = "flnet.orchestrator"


class Reason(StrEnum):
    """`ErrorInfo.reason` values: why a request failed, machine-readable."""

    RUN_NAME_INVALID = "RUN_NAME_INVALID"
    TENANT_MISMATCH = "TENANT_MISMATCH"
    ARTIFACT_MISSING = "ARTIFACT_MISSING"
    IMAGE_NOT_SUPPORTED = "IMAGE_NOT_SUPPORTED"
    SOURCE_NOT_SUPPORTED = "SOURCE_NOT_SUPPORTED"
    IMAGE_DIGEST_INVALID = "IMAGE_DIGEST_INVALID"
    CONTROL_ADDRESS_INVALID = "CONTROL_ADDRESS_INVALID"
    LIMITS_INVALID = "LIMITS_INVALID"
    DEADLINE_INVALID = "DEADLINE_INVALID"
    ENVIRONMENT_INVALID = "ENVIRONMENT_INVALID"
    GRACE_PERIOD_INVALID = "GRACE_PERIOD_INVALID"
    SOURCE_NOT_FOUND = "SOURCE_NOT_FOUND"
    IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"
    RUN_NOT_FOUND = "RUN_NOT_FOUND"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    LAUNCH_FAILED = "LAUNCH_FAILED"
    DOCKER_UNAVAILABLE = "DOCKER_UNAVAILABLE"


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
