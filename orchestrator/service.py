"""The OrchestratorService servicer: proto in, domain call on a `Backend`, proto out.
No business logic and no error handling here: domain errors propagate to the
error-mapping interceptor."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc

from flnet.api.orchestrator.v1 import orchestrator_service_pb2 as pb
from flnet.api.orchestrator.v1 import orchestrator_service_pb2_grpc as pb_grpc

from .backend import Backend, RunName
from .convert import (
    container_to_proto,
    event_to_proto,
    grace_from_proto,
    launch_spec_from_proto,
)
from .errors import InvalidArgument

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["OrchestratorService"].full_name

Context = grpc.aio.ServicerContext[Any, Any]


class OrchestratorService(pb_grpc.OrchestratorServiceServicer):
    """Implements flnet.api.orchestrator.v1.OrchestratorService over a Backend."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_OrchestratorServiceServicer_to_server(self, server)

    async def LaunchRun(
        self,
        request: pb.LaunchRunRequest,
        context: grpc.aio.ServicerContext[pb.LaunchRunRequest, pb.LaunchRunResponse],
    ) -> pb.LaunchRunResponse:
        container = await self._backend.launch(launch_spec_from_proto(request))
        return pb.LaunchRunResponse(container=container_to_proto(container))

    async def StopRun(
        self,
        request: pb.StopRunRequest,
        context: grpc.aio.ServicerContext[pb.StopRunRequest, pb.StopRunResponse],
    ) -> pb.StopRunResponse:
        run = RunName.parse(request.run)
        container = await self._backend.stop(run, grace_from_proto(request))
        return pb.StopRunResponse(container=container_to_proto(container))

    async def GetRunContainer(
        self,
        request: pb.GetRunContainerRequest,
        context: grpc.aio.ServicerContext[pb.GetRunContainerRequest, pb.GetRunContainerResponse],
    ) -> pb.GetRunContainerResponse:
        container = await self._backend.get(RunName.parse(request.run))
        return pb.GetRunContainerResponse(container=container_to_proto(container))

    async def ListRunContainers(
        self,
        request: pb.ListRunContainersRequest,
        context: grpc.aio.ServicerContext[
            pb.ListRunContainersRequest, pb.ListRunContainersResponse
        ],
    ) -> pb.ListRunContainersResponse:
        containers = await self._backend.list(include_exited=request.include_exited)
        return pb.ListRunContainersResponse(containers=[container_to_proto(c) for c in containers])

    async def WatchContainers(
        self,
        request: pb.WatchContainersRequest,
        context: grpc.aio.ServicerContext[pb.WatchContainersRequest, pb.WatchContainersResponse],
    ) -> AsyncIterator[pb.WatchContainersResponse]:
        if request.after_sequence < 0:  # as the control plane's WatchRun
            raise InvalidArgument.field("after_sequence", "must not be negative")
        log.debug("watcher joined after sequence %d", request.after_sequence)
        try:
            async with aclosing(self._backend.events(request.after_sequence)) as events:
                async for event in events:
                    yield event_to_proto(event)
        except asyncio.CancelledError:
            log.debug("watcher went away")
            raise
