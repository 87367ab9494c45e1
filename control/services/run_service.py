"""RunService: proto <-> domain. The logic lives behind control.runs.RunController."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from flnet.api.common.v1.lifecycle_pb2 import RunState
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.channels import CHUNK_BYTES
from flnet.control import names, pagination
from flnet.control.blobs import BlobStore
from flnet.control.export import export_run
from flnet.control.identity import caller
from flnet.control.reasons import Reason
from flnet.control.runs import RunController
from flnet.control.services.artifact_service import stream_blob
from flnet.control.store import RunFilter
from flnet.control.validation import check_finite, struct_to_dict
from flnet.errors import InvalidArgument
from flnet.server.auth.audit import note_resource
from flnet.server.ranges import declared_enum_values, timestamp_us

MAX_EVENTS_PAGE = 10_000


class RunService(rsg.RunServiceServicer):
    def __init__(self, runs: RunController, blobs: BlobStore) -> None:
        self.runs = runs
        self.blobs = blobs

    async def CreateRun(
        self,
        request: rs.CreateRunRequest,
        context: grpc.aio.ServicerContext[rs.CreateRunRequest, rs.CreateRunResponse],
    ) -> rs.CreateRunResponse:
        tenant = names.parse_tenant(request.parent)
        if len(request.request_id) > 255:
            raise InvalidArgument(
                "request_id is longer than 255 characters",
                violations=[("request_id", "at most 255 characters")],
            )
        check_finite(request.run.config, "run.config", Reason.CONFIG_INVALID)
        row, credential = await self.runs.create(
            tenant, request.run, request.request_id, caller().subject
        )
        note_resource(row.name)  # the audit log names the run created, not just its parent
        return rs.CreateRunResponse(run=await self.runs.run_proto(row), dev_credential=credential)

    async def GetRun(
        self,
        request: rs.GetRunRequest,
        context: grpc.aio.ServicerContext[rs.GetRunRequest, rs.GetRunResponse],
    ) -> rs.GetRunResponse:
        row = await self.runs.get(*names.parse_run(request.name))
        return rs.GetRunResponse(run=await self.runs.run_proto(row))

    async def ListRuns(
        self,
        request: rs.ListRunsRequest,
        context: grpc.aio.ServicerContext[rs.ListRunsRequest, rs.ListRunsResponse],
    ) -> rs.ListRunsResponse:
        tenant = names.parse_tenant(request.parent)
        size = pagination.page_size(request.page_size)
        tool = tool_version = ""
        if request.tool:
            if names.TOOL_RE.match(request.tool):
                tool = names.parse_tool(request.tool, "tool")[1]
            else:
                tool_version = str(names.parse_tool_version(request.tool, "tool"))
        created_from = created_to = None
        if request.HasField("create_time_start"):
            created_from = timestamp_us(request.create_time_start, "create_time_start")
        if request.HasField("create_time_end"):
            created_to = timestamp_us(request.create_time_end, "create_time_end")
        states = declared_enum_values(request.states, RunState.DESCRIPTOR, "states")
        query = {
            "parent": request.parent,
            "tool": request.tool,
            "states": sorted(states),
            "from": created_from,
            "to": created_to,
        }
        after = pagination.decode(request.page_token, query)
        rows = await self.runs.list_runs(
            tenant,
            RunFilter(tool, tool_version, states, created_from, created_to),
            after=(int(after[0]), str(after[1])) if after else None,
            limit=size + 1,
        )
        more = len(rows) > size
        runs = await self.runs.run_protos(rows[:size])
        kept = pagination.fitting(runs)
        more = more or kept < len(runs)
        token = ""
        if more:
            last = rows[kept - 1]
            token = pagination.encode([last.create_us, last.id], query)
        return rs.ListRunsResponse(runs=runs[:kept], next_page_token=token)

    async def CancelRun(
        self,
        request: rs.CancelRunRequest,
        context: grpc.aio.ServicerContext[rs.CancelRunRequest, rs.CancelRunResponse],
    ) -> rs.CancelRunResponse:
        tenant, run_id = names.parse_run(request.name)
        row = await self.runs.cancel(tenant, run_id, request.reason, caller().subject)
        return rs.CancelRunResponse(run=await self.runs.run_proto(row))

    async def WatchRun(
        self,
        request: rs.WatchRunRequest,
        context: grpc.aio.ServicerContext[rs.WatchRunRequest, rs.WatchRunResponse],
    ) -> AsyncIterator[rs.WatchRunResponse]:
        """History, then live events (control.runs.watching)."""
        row = await self.runs.get(*names.parse_run(request.name))
        if request.after_sequence < 0:
            raise InvalidArgument(
                "after_sequence must not be negative",
                violations=[("after_sequence", "must not be negative")],
            )
        async for response in self.runs.watch(row, request.after_sequence):
            yield response

    async def ListRunEvents(
        self,
        request: rs.ListRunEventsRequest,
        context: grpc.aio.ServicerContext[rs.ListRunEventsRequest, rs.ListRunEventsResponse],
    ) -> rs.ListRunEventsResponse:
        row = await self.runs.get(*names.parse_run(request.parent, "parent"))
        if request.after_sequence < 0:  # as WatchRun's
            raise InvalidArgument.field("after_sequence", "must not be negative")
        size = pagination.page_size(request.page_size, default=1000, maximum=MAX_EVENTS_PAGE)
        query = {"parent": request.parent, "after": request.after_sequence}
        position = pagination.decode(request.page_token, query)
        after = int(position) if position is not None else request.after_sequence
        response = rs.ListRunEventsResponse()
        more = await self.runs.events(row, response, after=after, limit=size)
        kept = pagination.fitting(response.events)
        if kept < len(response.events):
            del response.events[kept:]
            more = True
        if more:
            response.next_page_token = pagination.encode(response.events[-1].sequence, query)
        return response

    async def ReproduceRun(
        self,
        request: rs.ReproduceRunRequest,
        context: grpc.aio.ServicerContext[rs.ReproduceRunRequest, rs.ReproduceRunResponse],
    ) -> rs.ReproduceRunResponse:
        tenant, run_id = names.parse_run(request.name)
        row = await self.runs.reproduce(tenant, run_id, request.request_id, caller().subject)
        return rs.ReproduceRunResponse(run=await self.runs.run_proto(row))

    async def ExportRun(
        self,
        request: rs.ExportRunRequest,
        context: grpc.aio.ServicerContext[rs.ExportRunRequest, rs.ExportRunResponse],
    ) -> AsyncIterator[rs.ExportRunResponse]:
        tenant, run_id = names.parse_run(request.name)
        sources = await self.runs.export_sources(tenant, run_id)

        async def read(artifact: ap.Artifact) -> AsyncIterator[bytes]:
            async for msg in stream_blob(self.blobs, artifact, 0):
                yield msg.data

        filename = f"{run_id}.crate.zip"
        crate = export_run(
            sources.run,
            sources.tool,
            sources.events,
            sources.inputs,
            read,
            exported_by=caller().subject,
        )
        async for data in crate:
            for start in range(0, len(data), CHUNK_BYTES):
                yield rs.ExportRunResponse(
                    filename=filename, data=data[start : start + CHUNK_BYTES]
                )
                filename = ""

    async def UpdateDevConfig(
        self,
        request: rs.UpdateDevConfigRequest,
        context: grpc.aio.ServicerContext[rs.UpdateDevConfigRequest, rs.UpdateDevConfigResponse],
    ) -> rs.UpdateDevConfigResponse:
        tenant, run_id = names.parse_run(request.name)
        row = await self.runs.update_dev_config(
            tenant,
            run_id,
            struct_to_dict(request.config, "config", Reason.CONFIG_INVALID),
            caller().subject,
        )
        return rs.UpdateDevConfigResponse(run=await self.runs.run_proto(row))

    async def StartDevTest(
        self,
        request: rs.StartDevTestRequest,
        context: grpc.aio.ServicerContext[rs.StartDevTestRequest, rs.StartDevTestResponse],
    ) -> rs.StartDevTestResponse:
        tenant, run_id = names.parse_run(request.name)
        row = await self.runs.start_dev_test(tenant, run_id, caller().subject)
        return rs.StartDevTestResponse(run=await self.runs.run_proto(row))
