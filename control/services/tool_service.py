"""ToolService: proto <-> domain, nothing else."""

from __future__ import annotations

from typing import Any

from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.control.v1 import tool_service_pb2_grpc as tsg
from flnet.control import names, pagination
from flnet.control.store import Store
from flnet.control.tools import prepare_tool_version

Context = Any


class ToolService(tsg.ToolServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    async def CreateToolVersion(
        self, request: ts.CreateToolVersionRequest, context: Context
    ) -> ts.CreateToolVersionResponse:
        tenant, tool = names.parse_tool(request.parent)
        version = prepare_tool_version(tenant, tool, request.tool_version)
        stored, created = await self.store.put_tool_version(tenant, tool, version)
        return ts.CreateToolVersionResponse(tool_version=stored, created=created)

    async def GetTool(self, request: ts.GetToolRequest, context: Context) -> ts.GetToolResponse:
        tenant, tool = names.parse_tool(request.name, "name")
        return ts.GetToolResponse(tool=await self.store.get_tool(tenant, tool))

    async def ListTools(
        self, request: ts.ListToolsRequest, context: Context
    ) -> ts.ListToolsResponse:
        tenant = names.parse_tenant(request.parent)
        size = pagination.page_size(request.page_size)
        query = {"parent": request.parent}
        after = pagination.decode(request.page_token, query) or ""
        tools = await self.store.list_tools(tenant, after=str(after), limit=size + 1)
        token = ""
        if len(tools) > size:
            tools = tools[:size]
            token = pagination.encode(tools[-1].name.rsplit("/", 1)[1], query)
        return ts.ListToolsResponse(tools=tools, next_page_token=token)

    async def GetToolVersion(
        self, request: ts.GetToolVersionRequest, context: Context
    ) -> ts.GetToolVersionResponse:
        tv = names.parse_tool_version(request.name)
        return ts.GetToolVersionResponse(tool_version=await self.store.get_tool_version(*tv))

    async def ListToolVersions(
        self, request: ts.ListToolVersionsRequest, context: Context
    ) -> ts.ListToolVersionsResponse:
        tenant, tool = names.parse_tool(request.parent)
        await self.store.get_tool(tenant, tool)
        size = pagination.page_size(request.page_size)
        query = {"parent": request.parent}
        before = pagination.decode(request.page_token, query)
        rows = await self.store.list_tool_versions(
            tenant, tool, before_id=int(before) if before is not None else None, limit=size + 1
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = pagination.encode(rows[-1][0], query)
        return ts.ListToolVersionsResponse(
            tool_versions=[v for _, v in rows], next_page_token=token
        )
