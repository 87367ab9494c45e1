"""The servicer over any Backend, and the one error-mapping interceptor: unexpected errors
become INTERNAL without leaking their text; domain errors in the middle of a stream end it
with their status after the events already sent."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import grpc
import pytest

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.api.orchestrator.v1 import orchestrator_service_pb2_grpc as pb_grpc
from flnet.channels import insecure_channel
from flnet.orchestrator.backend import (
    Container,
    ContainerEvent,
    ContainerState,
    LaunchSpec,
    RunName,
)
from flnet.orchestrator.errors import DOMAIN, NotFound, Reason
from flnet.orchestrator.service import SERVICE_NAME, OrchestratorService
from flnet.server.interceptors import ErrorMapper
from flnet.server.serving import Server

RUN = RunName("t", "r")
CONTAINER = Container(run=RUN, container_id="c1", backend="fake", state=ContainerState.RUNNING)


class FakeBackend:
    """A Backend that fails on purpose."""

    @property
    def name(self) -> str:
        return "fake"

    async def start(self) -> None:
        return None

    async def launch(self, spec: LaunchSpec) -> Container:
        return CONTAINER

    async def stop(self, run: RunName, grace: float | None = None) -> Container:
        return CONTAINER

    async def get(self, run: RunName) -> Container:
        raise RuntimeError("secret internal detail")

    async def list(self, *, include_exited: bool = False) -> Sequence[Container]:
        return [CONTAINER]

    async def events(self, after_sequence: int = 0) -> AsyncGenerator[ContainerEvent, None]:
        yield ContainerEvent(after_sequence + 1, CONTAINER)
        raise NotFound("the log is gone", Reason.RUN_NOT_FOUND)

    async def close(self, grace: float, *, end_engines: bool = True) -> None:
        return None


@pytest.fixture
async def stub() -> AsyncIterator[pb_grpc.OrchestratorServiceAsyncStub]:
    service = OrchestratorService(FakeBackend())
    server = Server([SERVICE_NAME], service.register, interceptors=[ErrorMapper(DOMAIN)])
    port = await server.start("127.0.0.1:0")
    async with insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.OrchestratorServiceStub(channel)
    await server.stop(0)


async def test_the_servicer_works_over_any_backend(
    stub: pb_grpc.OrchestratorServiceAsyncStub,
) -> None:
    listed = await stub.ListRunContainers(pb.ListRunContainersRequest())
    assert [(c.run, c.backend) for c in listed.containers] == [("tenants/t/runs/r", "fake")]


async def test_unexpected_errors_are_internal_without_details(
    stub: pb_grpc.OrchestratorServiceAsyncStub, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetRunContainer(pb.GetRunContainerRequest(run="tenants/t/runs/r"))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "internal error"
    assert "secret internal detail" in caplog.text  # logged, not sent


async def test_a_domain_error_mid_stream_ends_it_with_its_status(
    stub: pb_grpc.OrchestratorServiceAsyncStub,
) -> None:
    received: list[int] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for event in stub.WatchContainers(pb.WatchContainersRequest(after_sequence=41)):
            received.append(event.sequence)
    assert received == [42]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "the log is gone"
