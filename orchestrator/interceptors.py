"""Server interceptors of the orchestrator. `ErrorMappingInterceptor` is the one place
where domain errors (errors.py) become gRPC statuses: code, message, and a
`google.rpc.Status` in the trailers with `ErrorInfo` (reason, domain "flnet.orchestrator",
metadata), `BadRequest` field violations and, for retryable errors, `RetryInfo`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from .errors import (
    DOMAIN,
    InvalidArgument,
    LaunchFailed,
    NotFound,
    OrchestratorError,
    Unavailable,
)

log = logging.getLogger(__name__)

_CODES: list[tuple[type[OrchestratorError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (LaunchFailed, grpc.StatusCode.INTERNAL),
]
_RETRY_DELAY_SECONDS = 1


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: OrchestratorError) -> grpc.Status:
    """The gRPC status (with rich details in the trailers) of a domain error."""
    code = next((c for kind, c in _CODES if isinstance(error, kind)), grpc.StatusCode.INTERNAL)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=str(error.reason), domain=DOMAIN, metadata=error.metadata
            )
        )
    ]
    if isinstance(error, InvalidArgument) and error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    if isinstance(error, Unavailable):
        details.append(
            _pack(
                error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(seconds=_RETRY_DELAY_SECONDS)
                )
            )
        )
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)


# An aio handler's context; request and response types vary per method.
Context = grpc.aio.ServicerContext[Any, Any]
UnaryBehavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncGenerator[Any, None]]


async def _abort(context: Context, error: OrchestratorError) -> None:
    status = to_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


async def _abort_internal(context: Context, method: str) -> None:
    log.exception("unexpected error in %s", method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain errors raised by unary-unary and unary-stream handlers to statuses;
    unexpected exceptions become INTERNAL "internal error" (logged with traceback, no
    detail leaks). Aborts and cancellations pass through untouched."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        unary, stream = handler.unary_unary, handler.unary_stream
        if unary is not None and inspect.iscoroutinefunction(unary):
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(cast(UnaryBehavior, unary), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if stream is not None and inspect.isasyncgenfunction(stream):
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(cast(StreamBehavior, stream), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _wrap_unary(behavior: UnaryBehavior, method: str) -> UnaryBehavior:
    async def unary(request: Any, context: Context) -> Any:
        try:
            return await behavior(request, context)
        except OrchestratorError as error:
            await _abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception:
            await _abort_internal(context, method)

    return unary


def _wrap_stream(behavior: StreamBehavior, method: str) -> StreamBehavior:
    async def stream(request: Any, context: Context) -> AsyncGenerator[Any, None]:
        try:
            async with aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response
        except OrchestratorError as error:
            await _abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception:
            await _abort_internal(context, method)

    return stream
