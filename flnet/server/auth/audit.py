"""What the authorization interceptor tells the audit log about each call it guards: who
(subject, tenant, client, audience), what (method, resource), when, and the result.

Never the token, the request body or the configuration: only the resource name the call was
about. The interceptor reads it from the request's `name` or `parent` field (unary requests)
as the call ends, unless the handler named it with `note_resource()` (handlers of streamed
requests do, once they know it). The request is decoded by then, unless the call was
refused before its handler ran: it is decoded for the record only, and a malformed one
names no resource.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from ..decoding import RawRequest


@dataclass(frozen=True)
class AuditRecord:
    """One guarded call, as it ended.

    - `time_us`: when it started (microseconds since the epoch); `duration_us`: how long.
    - `subject`, `tenant`, `client_id`, `audience`: the caller, once authenticated (a refused
      credential leaves them empty: nothing in it can be trusted).
    - `method`: the full gRPC method; `resource`: the resource name it was about, if known.
    - `code`: the gRPC status code name ("OK", "NOT_FOUND", ...); `reason`: the ErrorInfo
      reason of a failure, else empty.
    """

    time_us: int
    duration_us: int
    subject: str
    tenant: str
    client_id: str
    audience: str
    method: str
    resource: str
    code: str
    reason: str


AuditSink = Callable[[AuditRecord], None]
"""Takes records without blocking (the call's status must not wait for the log)."""


class CallNote:
    """What a handler adds to its call's record (mutable: set inside the handler, read by
    the interceptor when the call ends)."""

    __slots__ = ("resource",)

    def __init__(self, resource: str = "") -> None:
        self.resource = resource


_note: ContextVar[CallNote | None] = ContextVar("flnet_audit_note", default=None)


def note_resource(name: str) -> None:
    """Names the resource the current call is about (e.g. the run a stream turned out to
    concern, or the resource a create made). Outside a guarded call it does nothing."""
    note = _note.get()
    if note is not None:
        note.resource = name


def resource_of(request: Any) -> str:
    """The resource a request message (or RawRequest) names: its `name`, else its `parent`
    field. A stream of requests names none (its handler may call note_resource)."""
    if isinstance(request, RawRequest):
        request = request.peek()
    if not isinstance(request, Message):
        return ""
    for field in ("name", "parent"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value
    return ""


def status_name(code: grpc.StatusCode) -> str:
    return str(code.name)
