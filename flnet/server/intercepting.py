"""The base of FLNet's server interceptors: grpc_interceptor's AsyncServerInterceptor (which
wraps each handler in a handler of the same cardinality) reduced to one hook, `around`, an
async context manager that every call runs inside. The hook is entered before the handler
runs and exited when the call ends: with its response, the exception that ends it, or, for a
stream of responses, once the stream is over, has failed or has been closed."""

from __future__ import annotations

import abc
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, aclosing
from typing import TYPE_CHECKING, Any

import grpc
from grpc_interceptor import AsyncServerInterceptor

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    #: A handler of any cardinality, or the next interceptor's.
    Behaviour = Callable[[Any, Context], Any]


class CallInterceptor(AsyncServerInterceptor):
    """Runs every call inside `around(method, request, context)`."""

    @abc.abstractmethod
    def around(
        self, method: str, request: Any, context: Context
    ) -> AbstractAsyncContextManager[None]:
        """The context of one call of `method` ("/package.Service/Method"). `request` is the
        request message, or the iterator of a stream of requests."""

    async def intercept(
        self, method: Behaviour, request_or_iterator: Any, context: Context, method_name: str
    ) -> Any:
        # Streamed responses come from an async generator function (grpc.aio's own test);
        # a coroutine function returns one response, or None when it wrote a stream with
        # context.write(). Decided before calling it: nothing runs before `around` is entered.
        if inspect.isasyncgenfunction(method):
            return self._stream(method, request_or_iterator, context, method_name)
        async with self.around(method_name, request_or_iterator, context):
            return await method(request_or_iterator, context)

    async def _stream(
        self, method: Behaviour, request: Any, context: Context, method_name: str
    ) -> AsyncIterator[Any]:
        # Neither grpc.aio nor grpc_interceptor's wrappers close the generator they iterate:
        # a stream whose client went away during a write is closed by asyncio's
        # async-generator finaliser (on its last reference, not the garbage collector), one
        # interceptor's generator after the other. aclosing closes the inner one inside
        # `around`, so the handler's finally runs before the call ends for us
        # (tests/auth/test_interceptor.py: a cancelled stream's finally runs promptly).
        async with (
            self.around(method_name, request, context),
            aclosing(method(request, context)) as responses,
        ):
            async for response in responses:
                yield response


def code_of(context: Context) -> grpc.StatusCode | None:
    """The code a handler set itself (context.abort / set_code), if any."""
    with contextlib.suppress(Exception):
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            return code
    return None
