"""Who is calling: the Principal an authenticated request carries, and where handlers find it.

The authorization interceptor sets the principal in a context variable around the handler.
grpc.aio runs each RPC (any cardinality, the whole response stream included) in a task of
its own, so the value is the caller's for the handler's whole life and is inherited by
tasks the handler creates; it never leaks into another RPC.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from flnet.errors import Unauthenticated

from .errors import Reason


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    - `subject`: the token's `sub` (for a client-credentials token without one, its client).
    - `audience`: the FLNet audience the token was accepted for: "user", "runtime" or
      "orchestrator" (the `audience` of the method's authorization declaration).
    - `issuer`: the token's `iss`.
    - `tenant`: from the configured tenant claim (or the configured default); None when the
      audience does not require one.
    - `scopes`: effective scopes: the token's `scope`/`scp` plus those its roles map to.
    - `roles`: the roles the token carries (from the configured roles claims).
    - `client_id`: the OAuth client (`client_id`, else `azp`), if any.
    - `expires_at`: the token's `exp`.
    - `claims`: every claim of the token, read-only (claims hold nothing secret; the token
      and its signature are not kept).
    """

    subject: str
    audience: str
    issuer: str
    tenant: str | None = None
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    client_id: str | None = None
    expires_at: datetime | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def has_scope(self, scope: str) -> bool:
        """Whether the principal carries `scope` itself (no `admin` implication)."""
        return scope in self.scopes

    def claim(self, name: str) -> Any:
        """One claim, or None (e.g. `run_id` of a runtime credential)."""
        return self.claims.get(name)


_current: ContextVar[Principal | None] = ContextVar("flnet_principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the RPC being handled, or None outside an authenticated RPC."""
    return _current.get()


def require_principal() -> Principal:
    """The caller of the RPC being handled; Unauthenticated when there is none (a server
    without the authorization interceptor)."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("request is not authenticated", Reason.TOKEN_MISSING)
    return principal


@contextlib.contextmanager
def use_principal(principal: Principal) -> Iterator[Principal]:
    """Makes `principal` the current one inside the block (the interceptor uses it; tests
    of handlers may too)."""
    token = _current.set(principal)
    try:
        yield principal
    finally:
        reset(_current, token)


def reset(var: ContextVar[Any], token: Token[Any]) -> None:
    """Restores `var` as it was before `token`'s set. A stream handler whose client went away
    is closed by asyncio's async-generator finaliser, in a task and context of its own: the
    token cannot be reset there, and nothing needs restoring in that context."""
    with contextlib.suppress(ValueError):
        var.reset(token)
