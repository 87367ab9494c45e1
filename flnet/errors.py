"""Domain errors shared by every FLNet server. Code raises these; one interceptor
(flnet.server.interceptors.ErrorMapper) turns them into gRPC statuses with google.rpc details:
ErrorInfo (reason, the server's domain, metadata), BadRequest field violations and, for
errors worth retrying, RetryInfo. Nothing that raises them needs to know about gRPC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import grpc


class FieldViolation(NamedTuple):
    """One bad request field: `field` is its path in the request ("run.config.epochs")."""

    field: str
    description: str


class FlnetError(Exception):
    """An error with a status code, an ErrorInfo reason and optional field violations.
    `message` is safe to show to the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    #: Seconds after which a retry may succeed (RetryInfo); None: do not retry as is.
    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        reason: str | None = None,
        *,
        violations: Sequence[tuple[str, str]] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = str(reason)
        self.violations = [FieldViolation(*v) for v in violations]
        self.metadata = dict(metadata or {})


class InvalidArgument(FlnetError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    @classmethod
    def field(cls, field: str, description: str, reason: str | None = None) -> InvalidArgument:
        """An error about one field; its message names the field."""
        return cls(f"{field}: {description}", reason, violations=[(field, description)])


class NotFound(FlnetError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(FlnetError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(FlnetError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class ResourceExhausted(FlnetError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class OutOfRange(FlnetError):
    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "OUT_OF_RANGE"


class Unauthenticated(FlnetError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(FlnetError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Aborted(FlnetError):
    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


class DataLoss(FlnetError):
    code = grpc.StatusCode.DATA_LOSS
    reason = "DATA_LOSS"


class Unavailable(FlnetError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"
    retry_after = 1.0


class Internal(FlnetError):
    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"
