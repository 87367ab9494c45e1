"""The authorization server interceptor: every RPC but health and reflection needs a valid
bearer token of the audience its contract declares, carrying the declared scopes.

For each call, before the handler runs (and before it reads any request of a stream):

1. public method (health, reflection)? pass through untouched, token or not;
2. the method's declaration (MethodPolicy); none: PERMISSION_DENIED `METHOD_UNDECLARED`;
3. the `authorization: Bearer <token>` metadata: UNAUTHENTICATED `TOKEN_MISSING` /
   `TOKEN_MALFORMED`;
4. the validator of the declared audience validates it: UNAUTHENTICATED (`TOKEN_*`),
   PERMISSION_DENIED `TENANT_MISSING`, or UNAVAILABLE `ISSUER_UNAVAILABLE`;
5. the declared scopes: PERMISSION_DENIED `SCOPE_MISSING`;
6. the handler runs with the Principal current (`flnet.auth.current_principal()`).

Rejections are flnet.errors domain errors raised inside the wrapped handler, whose
cardinality is the method's own (unary or streaming requests and responses alike), so the
client always sees a proper status. **Order**: they become statuses in
flnet.interceptors.ErrorMapper, which must therefore come *before* (outside) this
interceptor in the server's list: `interceptors=[ErrorMapper(domain), auth, ...]`.
(Placed after it, a rejection would reach grpc as an unexpected exception: UNKNOWN.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import grpc

from flnet.errors import FlnetError, Unauthenticated

from .errors import Reason
from .policy import MethodPolicy
from .principal import Principal, use_principal
from .tokens import Validator

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger(__name__)

Metadata = Iterable[tuple[str, str | bytes]]


def bearer_token(metadata: Metadata | None) -> str:
    """The token of the one `authorization: Bearer <token>` entry (scheme case-insensitive,
    RFC 6750). Unauthenticated TOKEN_MISSING without the entry, TOKEN_MALFORMED for any
    other form (another scheme, no token, several entries)."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        raise Unauthenticated(
            "missing bearer token in the authorization metadata", Reason.TOKEN_MISSING
        )
    malformed = Unauthenticated(
        "authorization metadata must be one 'Bearer <token>'", Reason.TOKEN_MALFORMED
    )
    if len(values) > 1 or not isinstance(values[0], str):
        raise malformed
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise malformed
    return token


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates and authorizes every call (see the module docstring).

    - `policy`: the server's methods and what each requires.
    - `validators`: a Validator per audience ("user", "runtime", "orchestrator"); every
      audience the policy declares needs one (ValueError otherwise, at construction).
    """

    def __init__(self, policy: MethodPolicy, validators: Mapping[str, Validator]) -> None:
        missing = policy.audiences - set(validators)
        if missing:
            raise ValueError(f"no token validator for audience(s): {', '.join(sorted(missing))}")
        self.policy = policy
        self.validators = dict(validators)

    async def authenticate(self, method: str, metadata: Metadata | None) -> Principal:
        """The Principal allowed to call `method` with `metadata`, or the domain error
        that refuses it. Usable without a server (e.g. by a gateway check)."""
        principal: Principal | None = None
        try:
            requirement = self.policy.declared(method)
            token = bearer_token(metadata)
            principal = await self.validators[requirement.audience].validate(token)
            self.policy.check_scopes(requirement, principal)
        except FlnetError as e:
            # Never the token: the method, the reason and, once known, the subject. Refused
            # credentials at DEBUG (a flood of bad tokens must not flood the log).
            level = logging.INFO if principal is not None else logging.DEBUG
            subject = principal.subject if principal is not None else "-"
            log.log(level, "%s refused (%s) for %s", method, e.reason, subject)
            raise
        return principal

    def _unary(self, inner: Any, method: str, metadata: Metadata | None) -> Any:
        async def behaviour(request: Any, context: Context) -> Any:
            principal = await self.authenticate(method, metadata)
            with use_principal(principal):
                return await inner(request, context)

        return behaviour

    def _stream(self, inner: Any, method: str, metadata: Metadata | None) -> Any:
        async def behaviour(request: Any, context: Context) -> AsyncIterator[Any]:
            principal = await self.authenticate(method, metadata)
            with use_principal(principal):
                async with aclosing(inner(request, context)) as responses:
                    async for item in responses:
                        yield item

        return behaviour

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = getattr(handler_call_details, "method", "")
        if self.policy.is_public(method):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # no such method: UNIMPLEMENTED, as without this interceptor
        metadata: Metadata | None = getattr(handler_call_details, "invocation_metadata", None)
        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method, metadata), **kw
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method, metadata), **kw
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method, metadata), **kw
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(handler.stream_stream, method, metadata), **kw
        )

    async def close(self) -> None:
        """Closes the validators (their HTTP sessions). Call after the server stopped."""
        for validator in {id(v): v for v in self.validators.values()}.values():
            await validator.close()
