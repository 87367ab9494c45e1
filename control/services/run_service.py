"""RunService: proto <-> domain. The logic lives in control.runs and control.store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from flnet import lifecycle
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.channels import CHUNK_BYTES
from flnet.control import names, pagination
from flnet.control.blobs import BlobStore
from flnet.control.clock import from_timestamp
from flnet.control.export import export_run
from flnet.control.identity import caller
from flnet.control.runs import RunController
from flnet.control.services.artifact_service import stream_blob
from flnet.control.validation import struct_to_dict
from flnet.errors import InvalidArgument
from flnet.server.auth.audit import note_resource

Context = Any
WATCH_BATCH = 1000
MAX_EVENTS_PAGE = 10_000


class RunService(rsg.RunServiceServicer):
    def __init__(self, runs: RunController, blobs: BlobStore) -> None:
        self.runs = runs
        self.store = runs.store
        self.blobs = blobs

    async def CreateRun(
        self, request: rs.CreateRunRequest, context: Context
    ) -> rs.CreateRunResponse:
        tenant = names.parse_tenant(request.parent)
        if len(request.request_id) > 255:
            raise InvalidArgument(
                "request_id is longer than 255 characters",
                violations=[("request_id", "at most 255 characters")],
            )
        row, credential = await self.runs.create(
            tenant, request.run, request.request_id, caller().subject
        )
        note_resource(row.name)  # the audit log names the run created, not just its parent
        return rs.CreateRunResponse(run=await self.runs.run_proto(row), dev_credential=credential)

    async def GetRun(self, request: rs.GetRunRequest, context: Context) -> rs.GetRunResponse:
        row = await self.store.get_run(*names.parse_run(request.name))
        return rs.GetRunResponse(run=await self.runs.run_proto(row))

    async def ListRuns(self, request: rs.ListRunsRequest, context: Context) -> rs.ListRunsResponse:
        tenant = names.parse_tenant(request.parent)
        size = pagination.page_size(request.page_size)
        tool = tool_version = ""
        if request.tool:
            if names.TOOL_RE.match(request.tool):
                tool = names.parse_tool(request.tool, "tool")[1]
            else:
                tool_version = str(names.parse_tool_version(request.tool, "tool"))
        created_from = (
            from_timestamp(request.create_time_start)
            if request.HasField("create_time_start")
            else None
        )
        created_to = (
            from_timestamp(request.create_time_end) if request.HasField("create_time_end") else None
        )
        query = {
            "parent": request.parent,
            "tool": request.tool,
            "states": sorted(request.states),
            "from": created_from,
            "to": created_to,
        }
        after = pagination.decode(request.page_token, query)
        rows = await self.store.list_runs(
            tenant,
            tool=tool,
            tool_version=tool_version,
            states=list(request.states),
            created_from_us=created_from,
            created_to_us=created_to,
            after=(int(after[0]), str(after[1])) if after else None,
            limit=size + 1,
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = pagination.encode([rows[-1].create_us, rows[-1].id], query)
        return rs.ListRunsResponse(runs=await self.runs.run_protos(rows), next_page_token=token)

    async def CancelRun(
        self, request: rs.CancelRunRequest, context: Context
    ) -> rs.CancelRunResponse:
        tenant, run_id = names.parse_run(request.name)
        row = await self.runs.cancel(tenant, run_id, request.reason, caller().subject)
        return rs.CancelRunResponse(run=await self.runs.run_proto(row))

    async def WatchRun(
        self, request: rs.WatchRunRequest, context: Context
    ) -> AsyncIterator[rs.WatchRunResponse]:
        """History from the store, then live events: the store is the only source, so the
        stream has no gap and no duplicate however events and reads interleave."""
        row = await self.store.get_run(*names.parse_run(request.name))
        if request.after_sequence < 0:
            raise InvalidArgument(
                "after_sequence must not be negative",
                violations=[("after_sequence", "must not be negative")],
            )
        cursor = request.after_sequence
        # The run's end was streamed, or it had ended before the watch began: from here on,
        # every read that leaves the stream caught up checks whether all has been streamed.
        saw_end = row.terminal
        ended = False  # the run had ended before the latest read
        while True:
            news = self.store.feed.next(row.id)
            response = rs.WatchRunResponse()
            count, full = await self.store.read_events(
                row, response, after=cursor, limit=WATCH_BATCH
            )
            if count:
                cursor = response.events[-1].sequence
                saw_end = saw_end or any(
                    e.HasField("state_change") and lifecycle.is_terminal(e.state_change.to_state)
                    for e in response.events
                )
                yield response
                if full:
                    continue
                if not saw_end:
                    # Caught up with a live run: what commits after the read sets `news`.
                    await news.wait()
                    continue
            # Caught up with what was stored at the read: has the run's stream ended? Events
            # may follow the terminal change (telemetry the engine flushed as it ended), and
            # gc may have dropped telemetry up to the run's last sequence: an ended run whose
            # read after its end found nothing more has been streamed whole.
            fresh = await self.store.get_run_by_id(row.id)
            if fresh is None or (fresh.terminal and (ended or cursor >= fresh.last_sequence)):
                return
            ended = fresh.terminal
            if cursor < fresh.last_sequence:
                continue
            await news.wait()

    async def ListRunEvents(
        self, request: rs.ListRunEventsRequest, context: Context
    ) -> rs.ListRunEventsResponse:
        row = await self.store.get_run(*names.parse_run(request.parent, "parent"))
        size = pagination.page_size(request.page_size, default=1000, maximum=MAX_EVENTS_PAGE)
        query = {"parent": request.parent, "after": request.after_sequence}
        position = pagination.decode(request.page_token, query)
        after = int(position) if position is not None else request.after_sequence
        response = rs.ListRunEventsResponse()
        _, full = await self.store.read_events(row, response, after=after, limit=size)
        if full:
            response.next_page_token = pagination.encode(response.events[-1].sequence, query)
        return response

    async def ReproduceRun(
        self, request: rs.ReproduceRunRequest, context: Context
    ) -> rs.ReproduceRunResponse:
        tenant, run_id = names.parse_run(request.name)
        row = await self.runs.reproduce(tenant, run_id, request.request_id, caller().subject)
        return rs.ReproduceRunResponse(run=await self.runs.run_proto(row))

    async def ExportRun(
        self, request: rs.ExportRunRequest, context: Context
    ) -> AsyncIterator[rs.ExportRunResponse]:
        tenant, run_id = names.parse_run(request.name)
        row = await self.store.get_run(tenant, run_id)
        run = await self.runs.run_proto(row)
        tv = names.parse_tool_version(run.tool_version, "run.tool_version")
        tool = await self.store.get_tool_version(tv.tenant, tv.tool, tv.version)
        inputs = [
            await self.store.get_artifact(tenant, names.parse_artifact(i.artifact)[1])
            for i in run.inputs
        ]

        async def events() -> AsyncIterator[rp.RunEvent]:
            after = 0
            while True:
                page = rs.ListRunEventsResponse()
                _, full = await self.store.read_events(row, page, after=after, limit=WATCH_BATCH)
                for event in page.events:
                    yield event
                if not full or not page.events:
                    return
                after = page.events[-1].sequence

        async def read(artifact: ap.Artifact) -> AsyncIterator[bytes]:
            async for msg in stream_blob(self.blobs, artifact, 0):
                yield msg.data

        filename = f"{run_id}.crate.zip"
        crate = export_run(run, tool, events(), inputs, read, exported_by=caller().subject)
        async for data in crate:
            for start in range(0, len(data), CHUNK_BYTES):
                yield rs.ExportRunResponse(
                    filename=filename, data=data[start : start + CHUNK_BYTES]
                )
                filename = ""

    async def UpdateDevConfig(
        self, request: rs.UpdateDevConfigRequest, context: Context
    ) -> rs.UpdateDevConfigResponse:
        tenant, run_id = names.parse_run(request.name)
        row = await self.runs.update_dev_config(
            tenant, run_id, struct_to_dict(request.config), caller().subject
        )
        return rs.UpdateDevConfigResponse(run=await self.runs.run_proto(row))

    async def StartDevTest(
        self, request: rs.StartDevTestRequest, context: Context
    ) -> rs.StartDevTestResponse:
        tenant, run_id = names.parse_run(request.name)
        row = await self.runs.start_dev_test(tenant, run_id, caller().subject)
        return rs.StartDevTestResponse(run=await self.runs.run_proto(row))
