"""Domain errors of the control plane. Services raise these; one interceptor
(control.interceptors.ErrorMapper) turns them into gRPC statuses with google.rpc details."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

DOMAIN = "flnet.control"


class FlnetError(Exception):
    """An error with a gRPC status code, an ErrorInfo reason and optional field violations."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        violations: Sequence[tuple[str, str]] = (),
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.violations = list(violations)
        self.metadata = dict(metadata or {})


class InvalidArgument(FlnetError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


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


class DataLoss(FlnetError):
    code = grpc.StatusCode.DATA_LOSS
    reason = "DATA_LOSS"


class Unavailable(FlnetError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"
