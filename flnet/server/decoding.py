"""Requests are decoded inside the interceptor chain, after authentication.

grpc parses a request with its handler's deserializer before any interceptor runs, so a
malformed message never met the authorization interceptor: an unauthenticated caller got
UNKNOWN (unary) or INTERNAL (request streams), unaudited, and the log a traceback per call.
`RequestDecoder`, the innermost interceptor (serving.Server installs it after the others),
gives grpc a deserializer that keeps the bytes (`RawRequest`) and parses them when the
handler is called, that is once every outer interceptor let the call through: a
malformed message is then InvalidArgument (ErrorMapper adds ErrorInfo), audited like any
other answer, and logged at most once per `LOG_INTERVAL` per method, without traceback.
Streamed requests are parsed one by one as the handler reads them.

Handlers read request streams by iterating over them (never `context.read()`, which would
return the RawRequest). Handlers without a deserializer are left as they are.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from flnet.errors import InvalidArgument

from .throttle import Throttle

if TYPE_CHECKING:
    from typing import TypeAlias

    from .intercepting import Behaviour, Context

    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]

log = logging.getLogger(__name__)

#: Seconds between two log lines about malformed requests to the same method.
LOG_INTERVAL = 10.0

Parse = Callable[[bytes], Any]


class RawRequest:
    """One request message as it came off the wire, parsed once, on demand."""

    __slots__ = ("_parse", "_parsed", "data")

    def __init__(self, data: bytes, parse: Parse) -> None:
        self.data = data
        self._parse = parse
        self._parsed: tuple[Any, DecodeError | None] | None = None

    def _result(self) -> tuple[Any, DecodeError | None]:
        if self._parsed is None:
            try:
                self._parsed = (self._parse(self.data), None)
            except DecodeError as e:
                self._parsed = (None, e)
        return self._parsed

    def decode(self) -> Any:
        """The message; MalformedRequest when the bytes are not one."""
        message, error = self._result()
        if error is not None:
            raise MalformedRequest(f"the request is not a valid {_type_name(self._parse)} message")
        return message

    def peek(self) -> Any | None:
        """The message, or None when the bytes are not one (never raises)."""
        return self._result()[0]


class MalformedRequest(InvalidArgument):
    """A request message that could not be decoded."""


def _type_name(parse: Parse) -> str:
    # Generated deserializers are the message class's FromString.
    descriptor = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "protobuf"))


class RequestDecoder(grpc.aio.ServerInterceptor):
    """Moves request decoding from grpc into the handler (see the module docstring). Must
    be the innermost interceptor: the ones before it see RawRequests."""

    def __init__(self, log_interval: float = LOG_INTERVAL) -> None:
        self._throttle = Throttle(log, log_interval)
        # method -> (the handler grpc found, its decoding replacement)
        self._handlers: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.request_deserializer is None:
            return handler
        known = self._handlers.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        decoding = self._decoding(handler, handler.request_deserializer, method)
        self._handlers[method] = (handler, decoding)  # registered methods only: bounded
        return decoding

    def _decoding(self, handler: Handler, parse: Parse, method: str) -> Handler:
        def keep(data: bytes) -> RawRequest:
            return RawRequest(data, parse)

        def decode(raw: RawRequest, context: Context, index: int | None = None) -> Any:
            try:
                return raw.decode()
            except MalformedRequest:
                where = "" if index is None else f" (message {index} of the stream)"
                self._throttle.log(
                    logging.WARNING, method, "malformed request to %s%s from %s",
                    method, where, context.peer(),
                )  # fmt: skip
                raise

        async def stream(requests: AsyncIterator[RawRequest], context: Context) -> Any:
            index = 0
            async for raw in requests:
                yield decode(raw, context, index)
                index += 1

        if handler.request_streaming:
            convert: Callable[[Any, Context], Any] = stream
        else:
            convert = decode
        if handler.unary_unary is not None:
            wrapped = _calling(handler.unary_unary, convert)
            factory: Callable[..., Handler] = grpc.unary_unary_rpc_method_handler
        elif handler.unary_stream is not None:
            wrapped = _calling(handler.unary_stream, convert)
            factory = grpc.unary_stream_rpc_method_handler
        elif handler.stream_unary is not None:
            wrapped = _calling(handler.stream_unary, convert)
            factory = grpc.stream_unary_rpc_method_handler
        elif handler.stream_stream is not None:
            wrapped = _calling(handler.stream_stream, convert)
            factory = grpc.stream_stream_rpc_method_handler
        else:
            return handler
        return factory(
            wrapped, request_deserializer=keep, response_serializer=handler.response_serializer
        )


def _calling(behaviour: Callable[..., Any], convert: Callable[[Any, Context], Any]) -> Behaviour:
    """`behaviour` called with its request converted, of the same kind: an async generator
    function for one (grpc.aio and the interceptors tell a stream of responses by it), else
    a coroutine function (also for a synchronous handler, as the interceptors around it
    make it: in practice the base class's "not implemented" of a generated servicer)."""
    if inspect.isasyncgenfunction(behaviour):

        async def responses(request: Any, context: Context) -> AsyncIterator[Any]:
            # Closed here, inside the call, when the client goes away (as CallInterceptor).
            async with aclosing(behaviour(convert(request, context), context)) as inner:
                async for response in inner:
                    yield response

        return responses

    async def response(request: Any, context: Context) -> Any:
        result = behaviour(convert(request, context), context)
        return await result if inspect.isawaitable(result) else result

    return response
