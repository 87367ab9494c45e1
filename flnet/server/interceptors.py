"""The error-mapping server interceptor every FLNet server installs next to its servicers:
the one place where domain errors (flnet.errors) become gRPC statuses. Unexpected
exceptions become INTERNAL "internal error" (logged with their traceback, nothing leaks);
aborts and cancellations pass through untouched. A method its servicer does not implement
(the generated base class's NotImplementedError, e.g. grpc.health.v1.Health/List) is
UNIMPLEMENTED, as without interceptors: a client's choice of method is no server fault."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from flnet.errors import FlnetError

from .intercepting import CallInterceptor, code_of

if TYPE_CHECKING:
    from .intercepting import Context

log = logging.getLogger(__name__)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_details(error: FlnetError, domain: str) -> bytes:
    """Serialized google.rpc.Status of a domain error, for `grpc-status-details-bin`."""
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    status.details.append(
        _pack(
            error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
        )
    )
    if error.violations:
        status.details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in error.violations
                    ]
                )
            )
        )
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    data: bytes = status.SerializeToString()
    return data


class ErrorMapper(CallInterceptor):
    """Maps FlnetErrors of every handler (any cardinality) to statuses of `domain`."""

    def __init__(self, domain: str) -> None:
        self.domain = domain

    @asynccontextmanager
    async def around(self, method: str, request: Any, context: Context) -> AsyncIterator[None]:
        try:
            yield
        except FlnetError as e:
            details = status_details(e, self.domain)
            await context.abort(
                e.code, e.message, trailing_metadata=(("grpc-status-details-bin", details),)
            )
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except NotImplementedError:
            if code_of(context) != grpc.StatusCode.UNIMPLEMENTED:  # not a generated stub's
                log.exception("unexpected error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "method not implemented")
        except Exception:
            log.exception("unexpected error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
