"""FleetService: the orchestrators and the tenant quotas, for operators (admin scope). Quotas
are the platform's, not a tenant's: an operator reads and sets any tenant's (a tenant's own
users cannot raise theirs)."""

from __future__ import annotations

import grpc

from flnet import resource_names
from flnet.api.control.v1 import fleet_pb2 as fp
from flnet.api.control.v1 import fleet_service_pb2 as fs
from flnet.api.control.v1 import fleet_service_pb2_grpc as fsg
from flnet.control.clock import timestamp
from flnet.control.fleet.scheduler import Quota
from flnet.control.identity import caller
from flnet.control.store.fleet import FleetStore
from flnet.errors import InvalidArgument
from flnet.server.auth.audit import note_resource

SERVICE_NAME = fs.DESCRIPTOR.services_by_name["FleetService"].full_name


def tenant_of(name: str, field: str) -> str:
    m = resource_names.TENANT.regex.fullmatch(name)
    if m is None:
        raise InvalidArgument.field(field, f"{name!r} is not a tenant name 'tenants/{{tenant}}'")
    note_resource(name)
    return m["tenant"]


class FleetService(fsg.FleetServiceServicer):
    def __init__(self, store: FleetStore, default_quota: Quota) -> None:
        self.store = store
        self.default_quota = default_quota

    async def ListOrchestrators(
        self,
        request: fs.ListOrchestratorsRequest,
        context: grpc.aio.ServicerContext[
            fs.ListOrchestratorsRequest, fs.ListOrchestratorsResponse
        ],
    ) -> fs.ListOrchestratorsResponse:
        loads = await self.store.loads()
        return fs.ListOrchestratorsResponse(
            orchestrators=[o.to_proto(loads.get(o.name)) for o in await self.store.orchestrators()]
        )

    async def GetTenantQuota(
        self,
        request: fs.GetTenantQuotaRequest,
        context: grpc.aio.ServicerContext[fs.GetTenantQuotaRequest, fs.GetTenantQuotaResponse],
    ) -> fs.GetTenantQuotaResponse:
        tenant = tenant_of(request.tenant, "tenant")
        return fs.GetTenantQuotaResponse(quota=await self._quota(tenant))

    async def UpdateTenantQuota(
        self,
        request: fs.UpdateTenantQuotaRequest,
        context: grpc.aio.ServicerContext[
            fs.UpdateTenantQuotaRequest, fs.UpdateTenantQuotaResponse
        ],
    ) -> fs.UpdateTenantQuotaResponse:
        q = request.quota
        tenant = tenant_of(q.tenant, "quota.tenant")
        violations = [
            (f"quota.{field}", "must not be negative (0: unlimited)")
            for field in ("max_runs", "max_cpu_millis", "max_memory_bytes")
            if getattr(q, field) < 0
        ]
        if violations:
            raise InvalidArgument("a quota must not be negative", violations=violations)
        quota = Quota(q.max_runs, q.max_cpu_millis, q.max_memory_bytes)
        await self.store.set_quota(tenant, quota, caller().subject)
        return fs.UpdateTenantQuotaResponse(quota=await self._quota(tenant))

    async def _quota(self, tenant: str) -> fp.TenantQuota:
        quota, updated, by = await self.store.quota(tenant, self.default_quota)
        usage, queued = await self.store.tenant_usage(tenant)
        out = fp.TenantQuota(
            tenant=f"tenants/{tenant}",
            max_runs=quota.max_runs,
            max_cpu_millis=quota.max_cpu_millis,
            max_memory_bytes=quota.max_memory_bytes,
            usage=fp.ResourceAmounts(
                cpu_millis=usage.cpu_millis, memory_bytes=usage.memory_bytes, runs=usage.runs
            ),
            queued_runs=queued,
            updated_by=by,
        )
        if updated is not None:
            out.update_time.CopyFrom(timestamp(updated))
        return out
