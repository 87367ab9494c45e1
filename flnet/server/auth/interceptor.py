"""The authorization server interceptor: every RPC but health and reflection needs a valid
bearer token of the audience its contract declares, carrying the declared scopes.

For each call, before the handler runs (and before it reads any request of a stream):

1. public method (health, reflection)? the handler runs as it is, token or not;
2. the method's declaration (MethodPolicy); none: PERMISSION_DENIED `METHOD_UNDECLARED`;
3. the `authorization: Bearer <token>` metadata: UNAUTHENTICATED `TOKEN_MISSING` /
   `TOKEN_MALFORMED`;
4. the validator of the declared audience validates it: UNAUTHENTICATED (`TOKEN_*`),
   PERMISSION_DENIED `TENANT_MISSING`, or UNAVAILABLE `ISSUER_UNAVAILABLE`;
5. the declared scopes: PERMISSION_DENIED `SCOPE_MISSING`;
6. the handler runs with the Principal current (`flnet.server.auth.current_principal()`);
   its request is decoded only now (flnet.server.decoding, in serving.Server): whatever
   the bytes, an unauthenticated call is UNAUTHENTICATED, and an authorized call with a
   malformed message INVALID_ARGUMENT, audited like any other.

Rejections are flnet.errors domain errors raised inside the call, in a handler of the
method's own cardinality (flnet.server.intercepting), so the client always sees a proper
status, streams and unary calls alike. **Order**: they become statuses in
flnet.server.interceptors.ErrorMapper, which must therefore come *before* (outside) this
interceptor in the server's list: `interceptors=[ErrorMapper(domain), auth, ...]`.
(Placed after it, a rejection would reach grpc as an unexpected exception: UNKNOWN.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc

from flnet.errors import FlnetError, Unauthenticated

from ..intercepting import CallInterceptor, code_of
from .audit import AuditRecord, AuditSink, CallNote, _note, resource_of
from .errors import Reason
from .policy import MethodPolicy
from .principal import Principal, reset, use_principal
from .tokens import Validator

if TYPE_CHECKING:
    from ..intercepting import Context

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
    # (split() cuts at exactly what isspace() finds, in C rather than a character at a time)
    if scheme.lower() != "bearer" or len(token.split()) != 1:
        raise malformed
    return token


class AuthInterceptor(CallInterceptor):
    """Authenticates and authorizes every call (see the module docstring).

    - `policy`: the server's methods and what each requires.
    - `validators`: a Validator per audience ("user", "runtime", "orchestrator"); every
      audience the policy declares needs one (ValueError otherwise, at construction).
    - `audit`: given an AuditRecord of every guarded call as it ends (refused ones too).
    """

    def __init__(
        self,
        policy: MethodPolicy,
        validators: Mapping[str, Validator],
        *,
        audit: AuditSink | None = None,
    ) -> None:
        missing = policy.audiences - set(validators)
        if missing:
            raise ValueError(f"no token validator for audience(s): {', '.join(sorted(missing))}")
        self.policy = policy
        self.validators = dict(validators)
        self.audit = audit

    async def authenticate(self, method: str, metadata: Metadata | None) -> Principal:
        """The Principal allowed to call `method` with `metadata`, or the domain error
        that refuses it. Usable without a server (e.g. by a gateway check)."""
        return await self._authenticate(method, metadata, _Call(method, None))

    async def _authenticate(self, method: str, metadata: Metadata | None, call: _Call) -> Principal:
        try:
            requirement = self.policy.declared(method)
            token = bearer_token(metadata)
            call.principal = await self.validators[requirement.audience].validate(token)
            self.policy.check_scopes(requirement, call.principal)
        except FlnetError as e:
            # Never the token: the method, the reason and, once known, the subject. Refused
            # credentials at DEBUG (a flood of bad tokens must not flood the log).
            known = call.principal is not None
            subject = call.principal.subject if call.principal is not None else "-"
            log.log(logging.INFO if known else logging.DEBUG,
                    "%s refused (%s) for %s", method, e.reason, subject)  # fmt: skip
            raise
        return call.principal

    @asynccontextmanager
    async def around(self, method: str, request: Any, context: Context) -> AsyncIterator[None]:
        """Authenticates the call, then records how it ended (audit), whatever ends it."""
        if self.policy.is_public(method):
            yield
            return
        call = _Call(method, request)
        note = _note.set(call.note)
        try:
            principal = await self._authenticate(method, context.invocation_metadata(), call)
            with use_principal(principal):
                yield
        except FlnetError as e:
            call.code, call.reason = e.code, e.reason
            raise
        except (asyncio.CancelledError, GeneratorExit):  # GeneratorExit: a stream abandoned
            call.code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            call.code = code_of(context) or grpc.StatusCode.INTERNAL  # as ErrorMapper
            raise
        finally:
            reset(_note, note)
            if self.audit is not None:
                self.audit(call.record())

    async def close(self) -> None:
        """Closes the validators (their HTTP sessions). Call after the server stopped."""
        for validator in {id(v): v for v in self.validators.values()}.values():
            await validator.close()


class _Call:
    """One guarded call while it runs: what its audit record will say."""

    __slots__ = ("code", "method", "note", "principal", "reason", "request", "started")

    def __init__(self, method: str, request: Any) -> None:
        self.method = method
        # Its resource is read as the call ends (audit.resource_of), not before the caller
        # is authenticated: a refused request is decoded for the record only.
        self.request = request
        self.note = CallNote()
        self.principal: Principal | None = None
        self.code = grpc.StatusCode.OK
        self.reason = ""
        self.started = time.time()

    def record(self) -> AuditRecord:
        p = self.principal
        return AuditRecord(
            time_us=int(self.started * 1e6),
            duration_us=int((time.time() - self.started) * 1e6),
            subject=p.subject if p else "",
            tenant=(p.tenant or "") if p else "",
            client_id=(p.client_id or "") if p else "",
            audience=p.audience if p else "",
            method=self.method,
            resource=self.note.resource or resource_of(self.request),
            code=self.code.name,
            reason=self.reason,
        )
