"""The control plane's server plumbing: health and reflection, as grpcurl relies on."""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import Clients


async def test_health_and_reflection(api: Clients) -> None:
    # The stubs of grpcio-health-checking and -reflection are typed for sync channels.
    health: Any = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", "flnet.api.control.v1.RunService"):
        res = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert res.status == health_pb2.HealthCheckResponse.SERVING
    reflection: Any = reflection_pb2_grpc.ServerReflectionStub(api.channel)  # type: ignore[arg-type]

    async def ask() -> list[str]:
        call = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for res in call:
            return [s.name for s in res.list_services_response.service]
        return []

    services = set(await ask())
    assert {
        "flnet.api.control.v1.ToolService",
        "flnet.api.control.v1.RunService",
        "flnet.api.control.v1.ArtifactService",
        "flnet.api.runtime.v1.RuntimeService",
        "grpc.health.v1.Health",
    } <= services
