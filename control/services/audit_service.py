"""AuditService: lists the audit log (control.store.audit) of a tenant."""

from __future__ import annotations

import re

import grpc

from flnet.api.control.v1 import audit_service_pb2 as aus
from flnet.api.control.v1 import audit_service_pb2_grpc as aug
from flnet.control import names, pagination
from flnet.control.store.audit import AuditLog
from flnet.errors import InvalidArgument
from flnet.server.ranges import timestamp_us, timestamp_violation

SERVICE_NAME = aus.DESCRIPTOR.services_by_name["AuditService"].full_name
CODE_NAMES = frozenset(code.name for code in grpc.StatusCode)
METHOD_RE = re.compile(r"^/[A-Za-z_][\w.]*/\w+$")


class AuditService(aug.AuditServiceServicer):
    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    async def ListAuditEvents(
        self,
        request: aus.ListAuditEventsRequest,
        context: grpc.aio.ServicerContext[aus.ListAuditEventsRequest, aus.ListAuditEventsResponse],
    ) -> aus.ListAuditEventsResponse:
        tenant = names.parse_tenant(request.parent)
        size = pagination.page_size(request.page_size)
        violations: list[tuple[str, str]] = []
        if request.method and not METHOD_RE.match(request.method):
            violations.append(("method", "expected a full method: /package.Service/Method"))
        if request.code and request.code not in CODE_NAMES:
            violations.append(("code", "expected a gRPC status code name, e.g. NOT_FOUND"))
        times: dict[str, int] = {}
        for field in ("time_start", "time_end"):
            if request.HasField(field):
                stamp = getattr(request, field)
                violation = timestamp_violation(stamp, field)
                if violation is None:
                    times[field] = timestamp_us(stamp, field)
                else:
                    violations.append(violation)
        time_from, time_to = times.get("time_start"), times.get("time_end")
        if time_from is not None and time_to is not None and time_to < time_from:
            violations.append(("time_end", "must not be before time_start"))
        if violations:
            raise InvalidArgument(
                "invalid filter: " + "; ".join(f"{f}: {d}" for f, d in violations),
                violations=violations,
            )
        query = {
            "parent": request.parent,
            "subject": request.subject,
            "method": request.method,
            "code": request.code,
            "resource": request.resource,
            "from": time_from,
            "to": time_to,
        }
        before = pagination.decode(request.page_token, query)
        if before is not None and not isinstance(before, int):
            raise InvalidArgument.field("page_token", "not a token this API issued")
        rows = await self.audit.list(
            tenant,
            subject=request.subject,
            method=request.method,
            code=request.code,
            resource=request.resource,
            time_from_us=time_from,
            time_to_us=time_to,
            before_id=before,
            limit=size + 1,
        )
        more = len(rows) > size
        events = [row.to_proto() for row in rows[:size]]
        kept = pagination.fitting(events)
        more = more or kept < len(events)
        token = pagination.encode(rows[kept - 1].id, query) if more else ""
        return aus.ListAuditEventsResponse(events=events[:kept], next_page_token=token)
