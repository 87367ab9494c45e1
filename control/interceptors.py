"""Server interceptors of the control plane. ErrorMapper is the one place where domain
errors become gRPC statuses with google.rpc details (ErrorInfo, BadRequest)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from flnet.control.errors import DOMAIN, FlnetError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]


def status_details(err: FlnetError) -> bytes:
    """Serialized google.rpc.Status carrying ErrorInfo and, for validation, BadRequest."""
    status = status_pb2.Status(code=err.code.value[0], message=err.message)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata))
    status.details.append(info)
    if err.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in err.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        status.details.append(detail)
    data: bytes = status.SerializeToString()
    return data


async def _abort(context: grpc.aio.ServicerContext[Any, Any], err: FlnetError) -> None:
    await context.abort(
        err.code, err.message, trailing_metadata=(("grpc-status-details-bin", status_details(err)),)
    )


def _unexpected(method: str) -> FlnetError:
    log.exception("unexpected error in %s", method)
    return FlnetError("internal error; the platform logged the details")


def _map_unary(inner: Any, method: str) -> Any:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await inner(request, context)
        except FlnetError as e:
            await _abort(context, e)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            await _abort(context, _unexpected(method))

    return behaviour


def _map_stream(inner: Any, method: str) -> Any:
    async def behaviour(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for item in inner(request, context):
                yield item
        except FlnetError as e:
            await _abort(context, e)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            await _abort(context, _unexpected(method))

    return behaviour


class ErrorMapper(grpc.aio.ServerInterceptor):
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
                _map_unary(handler.unary_unary, method), **kw
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _map_unary(handler.stream_unary, method), **kw
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _map_stream(handler.unary_stream, method), **kw
            )
        return grpc.stream_stream_rpc_method_handler(
            _map_stream(handler.stream_stream, method), **kw
        )
