"""The error-mapping server interceptor every FLNet server installs next to its servicers:
the one place where domain errors (flnet.errors) become gRPC statuses. Unexpected
exceptions become INTERNAL "internal error" (logged with their traceback, nothing leaks);
aborts and cancellations pass through untouched."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from flnet.errors import FlnetError

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]

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


class ErrorMapper(grpc.aio.ServerInterceptor):
    """Maps FlnetErrors of every handler (any cardinality) to statuses of `domain`."""

    def __init__(self, domain: str) -> None:
        self.domain = domain

    async def _abort(self, context: Context, error: FlnetError) -> None:
        await context.abort(
            error.code,
            error.message,
            trailing_metadata=(("grpc-status-details-bin", status_details(error, self.domain)),),
        )

    async def _abort_unexpected(self, context: Context, method: str) -> None:
        log.exception("unexpected error in %s", method)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    def _unary(self, inner: Any, method: str) -> Any:
        async def behaviour(request: Any, context: Context) -> Any:
            try:
                return await inner(request, context)
            except FlnetError as e:
                await self._abort(context, e)
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception:
                await self._abort_unexpected(context, method)

        return behaviour

    def _stream(self, inner: Any, method: str) -> Any:
        async def behaviour(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                async with aclosing(inner(request, context)) as responses:
                    async for item in responses:
                        yield item
            except FlnetError as e:
                await self._abort(context, e)
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception:
                await self._abort_unexpected(context, method)

        return behaviour

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = getattr(handler_call_details, "method", "")
        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method), **kw
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method), **kw
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method), **kw
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream, method), **kw
        )
