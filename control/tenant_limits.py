"""Each tenant's share of the control plane: a call rate (a token bucket) and calls in
flight (response streams counted apart: a watch lasts as long as its run). A tenant over its
share is answered RESOURCE_EXHAUSTED with RetryInfo, at once and cheaply, so a flood from one
tenant costs the others little; the refusal is audited like any other answer (this
interceptor runs inside the authenticating one, which records it). Engines and the
orchestrator are not users: their calls are bounded by their runs, not here."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor_pool

from flnet.control.reasons import Reason
from flnet.errors import ResourceExhausted
from flnet.server.auth import current_principal
from flnet.server.intercepting import CallInterceptor

if TYPE_CHECKING:
    import grpc

    Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class TenantShare:
    rate: float = 200.0  # calls per second, sustained
    burst: float = 400.0  # calls at once after a quiet spell
    calls: int = 64  # calls in flight (one response)
    streams: int = 256  # response streams open

    @classmethod
    def parse(cls, text: str) -> TenantShare:
        """FLNET_TENANT_SHARE: "rate=200,burst=400,calls=64,streams=256", any of them (the
        rest keep their defaults). ValueError says what is wrong."""
        values: dict[str, float | int] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in cls.__dataclass_fields__:
                raise ValueError(f"{item!r}: expected rate=, burst=, calls= or streams=")
            number = float(value) if key in ("rate", "burst") else int(value)
            if not number > 0 or number == float("inf"):
                raise ValueError(f"{key} must be a positive finite number")
            values[key] = number
        return cls(**values)  # type: ignore[arg-type]


class _Bucket:
    def __init__(self, share: TenantShare) -> None:
        self.tokens = share.burst
        self.at = time.monotonic()
        self.calls = 0
        self.streams = 0


class TenantLimits(CallInterceptor):
    def __init__(self, share: TenantShare) -> None:
        self.share = share
        self._tenants: dict[str, _Bucket] = {}
        self._streaming: dict[str, bool] = {}

    def _is_stream(self, method: str) -> bool:
        """Whether `method` ("/pkg.Service/Method") answers with a stream (its descriptor)."""
        found = self._streaming.get(method)
        if found is None:
            full = method.lstrip("/").replace("/", ".")
            try:
                desc = descriptor_pool.Default().FindMethodByName(full)
                found = desc.server_streaming
            except KeyError:
                found = False
            self._streaming[method] = found
        return found

    @contextlib.asynccontextmanager
    async def around(self, method: str, request: Any, context: Context) -> AsyncIterator[None]:
        principal = current_principal()
        if principal is None or principal.audience != "user" or not principal.tenant:
            yield
            return
        bucket = self._tenants.get(principal.tenant)
        if bucket is None:
            bucket = self._tenants[principal.tenant] = _Bucket(self.share)
        self._take(bucket)
        stream = self._is_stream(method)
        if stream:
            if bucket.streams >= self.share.streams:
                raise _refusal(Reason.TENANT_CALLS_EXCEEDED, "response streams", 1.0)
            bucket.streams += 1
        else:
            if bucket.calls >= self.share.calls:
                raise _refusal(Reason.TENANT_CALLS_EXCEEDED, "calls in flight", 0.1)
            bucket.calls += 1
        try:
            yield
        finally:
            if stream:
                bucket.streams -= 1
            else:
                bucket.calls -= 1

    def _take(self, bucket: _Bucket) -> None:
        now = time.monotonic()
        bucket.tokens = min(self.share.burst, bucket.tokens + (now - bucket.at) * self.share.rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            raise _refusal(
                Reason.TENANT_RATE_EXCEEDED,
                "calls per second",
                (1.0 - bucket.tokens) / self.share.rate,
            )
        bucket.tokens -= 1.0


def _refusal(reason: str, what: str, retry_after: float) -> ResourceExhausted:
    error = ResourceExhausted(
        f"the tenant has used its share of {what}; retry after {retry_after:.2f} s", reason
    )
    error.retry_after = max(retry_after, 0.01)
    return error
