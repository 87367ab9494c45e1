"""What a failed call says, read off its status: the code, the message, and the
google.rpc details the servers attach (ErrorInfo's reason, BadRequest's field violations,
RetryInfo's delay)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2


@dataclass(frozen=True)
class CallError:
    code: str
    message: str
    reason: str = ""
    violations: list[tuple[str, str]] = field(default_factory=list)
    retry_after: float | None = None

    @classmethod
    def of(cls, error: grpc.aio.AioRpcError) -> CallError:
        reason, violations, retry_after = "", [], None
        for detail in _details(error):
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            retry = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                reason = info.reason
            elif detail.Unpack(bad):
                violations = [(v.field, v.description) for v in bad.field_violations]
            elif detail.Unpack(retry):
                retry_after = retry.retry_delay.ToNanoseconds() / 1e9
        return cls(error.code().name, error.details() or "", reason, violations, retry_after)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.reason:
            out["reason"] = self.reason
        if self.violations:
            out["violations"] = [{"field": f, "description": d} for f, d in self.violations]
        if self.retry_after is not None:
            out["retryAfterSeconds"] = self.retry_after
        return out


def _details(error: grpc.aio.AioRpcError) -> list[Any]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                return list(status_pb2.Status.FromString(value).details)
            except DecodeError:
                return []
    return []
