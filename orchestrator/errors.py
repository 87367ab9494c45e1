"""Domain errors of the orchestrator. Backends and conversions raise them; the
error-mapping interceptor (interceptors.py) is the one place that turns them into gRPC
status codes with `google.rpc` details. Nothing here knows about gRPC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

#: `ErrorInfo.domain` of every orchestrator error.
DOMAIN = "flnet.orchestrator"


class Reason(StrEnum):
    """`ErrorInfo.reason` values: why a request failed, machine-readable."""

    RUN_NAME_INVALID = "RUN_NAME_INVALID"
    TENANT_MISMATCH = "TENANT_MISMATCH"
    ARTIFACT_MISSING = "ARTIFACT_MISSING"
    IMAGE_NOT_SUPPORTED = "IMAGE_NOT_SUPPORTED"
    LIMITS_INVALID = "LIMITS_INVALID"
    DEADLINE_INVALID = "DEADLINE_INVALID"
    ENVIRONMENT_INVALID = "ENVIRONMENT_INVALID"
    GRACE_PERIOD_INVALID = "GRACE_PERIOD_INVALID"
    SOURCE_NOT_FOUND = "SOURCE_NOT_FOUND"
    RUN_NOT_FOUND = "RUN_NOT_FOUND"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    LAUNCH_FAILED = "LAUNCH_FAILED"


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field: `field` is its path in the request ("limits.pids")."""

    field: str
    description: str


class OrchestratorError(Exception):
    """Base of the domain errors. `message` is safe to show to the caller."""

    def __init__(
        self, message: str, reason: Reason, *, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(OrchestratorError):
    """The request is malformed or asks for something this backend cannot do."""

    def __init__(
        self,
        message: str,
        reason: Reason,
        *,
        violations: Sequence[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason, metadata=metadata)
        self.violations = tuple(violations)

    @classmethod
    def field(cls, field: str, description: str, reason: Reason) -> InvalidArgument:
        """An error about a single field; its message names the field."""
        return cls(
            f"{field}: {description}", reason, violations=[FieldViolation(field, description)]
        )


class NotFound(OrchestratorError):
    """The run, its container, or the thing to execute does not exist."""


class Unavailable(OrchestratorError):
    """The orchestrator is shutting down; retry against its replacement."""


class LaunchFailed(OrchestratorError):
    """The backend could not start the container for a reason of its own."""
