"""ToolService: proto <-> domain, nothing else."""

from __future__ import annotations

import grpc

from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.control.v1 import tool_service_pb2_grpc as tsg
from flnet.control import names, pagination
from flnet.control.store import Store
from flnet.control.tool_sources import ToolSources
from flnet.control.tools import prepare_tool_version


class ToolService(tsg.ToolServiceServicer):
    def __init__(self, store: Store, sources: ToolSources) -> None:
        self.store = store
        self.sources = sources

    async def CreateToolVersion(
        self,
        request: ts.CreateToolVersionRequest,
        context: grpc.aio.ServicerContext[
            ts.CreateToolVersionRequest, ts.CreateToolVersionResponse
        ],
    ) -> ts.CreateToolVersionResponse:
        tenant, tool = names.parse_tool(request.parent)
        version = prepare_tool_version(tenant, tool, request.tool_version)
        source = await self.sources.admit(tenant, version) if version.HasField("source") else None
        stored, created = await self.store.tools.put_tool_version(tenant, tool, version, source)
        return ts.CreateToolVersionResponse(tool_version=stored, created=created)

    async def GetTool(
        self,
        request: ts.GetToolRequest,
        context: grpc.aio.ServicerContext[ts.GetToolRequest, ts.GetToolResponse],
    ) -> ts.GetToolResponse:
        tenant, tool = names.parse_tool(request.name, "name")
        return ts.GetToolResponse(tool=await self.store.tools.get_tool(tenant, tool))

    async def ListTools(
        self,
        request: ts.ListToolsRequest,
        context: grpc.aio.ServicerContext[ts.ListToolsRequest, ts.ListToolsResponse],
    ) -> ts.ListToolsResponse:
        tenant = names.parse_tenant(request.parent)
        size = pagination.page_size(request.page_size)
        query = {"parent": request.parent}
        after = pagination.decode(request.page_token, query) or ""
        tools = await self.store.tools.list_tools(tenant, after=str(after), limit=size + 1)
        token = ""
        if len(tools) > size:
            tools = tools[:size]
            token = pagination.encode(tools[-1].name.rsplit("/", 1)[1], query)
        return ts.ListToolsResponse(tools=tools, next_page_token=token)

    async def GetToolVersion(
        self,
        request: ts.GetToolVersionRequest,
        context: grpc.aio.ServicerContext[ts.GetToolVersionRequest, ts.GetToolVersionResponse],
    ) -> ts.GetToolVersionResponse:
        tv = names.parse_tool_version(request.name)
        return ts.GetToolVersionResponse(tool_version=await self.store.tools.get_tool_version(*tv))

    async def ListToolVersions(
        self,
        request: ts.ListToolVersionsRequest,
        context: grpc.aio.ServicerContext[ts.ListToolVersionsRequest, ts.ListToolVersionsResponse],
    ) -> ts.ListToolVersionsResponse:
        tenant, tool = names.parse_tool(request.parent)
        await self.store.tools.get_tool(tenant, tool)
        size = pagination.page_size(request.page_size)
        query = {"parent": request.parent}
        before = pagination.decode(request.page_token, query)
        rows = await self.store.tools.list_tool_versions(
            tenant, tool, before_id=int(before) if before is not None else None, limit=size + 1
        )
        more = len(rows) > size
        rows = rows[:size]
        kept = pagination.fitting([v for _, v in rows])
        if kept < len(rows):
            rows, more = rows[:kept], True
        token = pagination.encode(rows[-1][0], query) if more else ""
        return ts.ListToolVersionsResponse(
            tool_versions=[v for _, v in rows], next_page_token=token
        )
