"""Short-lived state of the authorization-code flow, kept in memory (a restart only makes a
user log in again): login pages waiting for their form, and issued authorization codes.

Both are looked up by an unguessable random value (the login page's CSRF nonce, the code)
and expire quickly; the stores are bounded so that a flood of requests cannot grow them
without limit.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from flnet.issuer.keys import Clock


@dataclass
class PendingLogin:
    """A validated authorization request, waiting for the user's name and password."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    code_challenge: str
    nonce: str | None
    expires_at: float


@dataclass
class AuthorizationCode:
    """An issued code: one exchange, for the client, redirect URI and PKCE challenge it was
    issued with. `family` names the refresh tokens the exchange issued, revoked if the code
    is presented again."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    username: str
    scopes: tuple[str, ...]
    nonce: str | None
    auth_time: int
    expires_at: float
    used: bool = False
    family: str | None = field(default=None)


class _Expiring(Protocol):
    expires_at: float


T = TypeVar("T", bound=_Expiring)


class ExpiringStore(Generic[T]):
    """Values under fresh random keys, gone once expired; at most `capacity` of them (the
    oldest are dropped first)."""

    def __init__(self, capacity: int = 10_000, clock: Clock = time.time) -> None:
        self._items: OrderedDict[str, T] = OrderedDict()
        self._capacity = capacity
        self._clock = clock

    def add(self, value: T) -> str:
        self._prune()
        key = secrets.token_urlsafe(32)
        self._items[key] = value
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return key

    def get(self, key: str) -> T | None:
        """The value under `key` unless it expired."""
        value = self._items.get(key)
        if value is None or value.expires_at <= self._clock():
            return None
        return value

    def pop(self, key: str) -> T | None:
        """Like get(), and removes it: a key is good for one use."""
        value = self._items.pop(key, None)
        if value is None or value.expires_at <= self._clock():
            return None
        return value

    def _prune(self) -> None:
        # Values of one store share their lifetime, so the oldest expire first.
        now = self._clock()
        while self._items:
            key, value = next(iter(self._items.items()))
            if value.expires_at > now:
                return
            del self._items[key]
