"""Status codes and rich error details: NOT_FOUND, INVALID_ARGUMENT with ErrorInfo reason,
domain and BadRequest field violations, all mapped by the one interceptor."""

from __future__ import annotations

import grpc
import pytest

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from tests.orchestrator.helpers import Orchestrator, details, seconds


async def launch_error(orch: Orchestrator, **fields: object) -> grpc.aio.AioRpcError:
    fields.setdefault("run", orch.run_name())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await orch.stub.LaunchRun(pb.LaunchRunRequest(**fields))  # type: ignore[arg-type]
    return info.value


async def test_missing_source_is_not_found(orch: Orchestrator) -> None:
    error = await launch_error(orch, source_path=str(orch.tmp_path / "nowhere"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert details(error) == ("SOURCE_NOT_FOUND", [])


async def test_image_digest_is_invalid_on_the_process_backend(orch: Orchestrator) -> None:
    error = await launch_error(orch, image_digest="sha256:" + "0" * 64)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "process backend runs local source only" in (error.details() or "")
    assert details(error) == ("IMAGE_NOT_SUPPORTED", ["image_digest"])


@pytest.mark.parametrize(
    ("fields", "reason", "violations"),
    [
        ({"run": "runs/x"}, "RUN_NAME_INVALID", ["run"]),
        ({"run": "tenants/a_b/runs/x"}, "RUN_NAME_INVALID", ["run"]),
        ({"run": "tenants/a/runs/../../etc"}, "RUN_NAME_INVALID", ["run"]),
        # Ids the control plane never mints (the contracts' grammar, flnet.resource_names).
        ({"run": "tenants/Acme/runs/x"}, "RUN_NAME_INVALID", ["run"]),
        ({"run": "tenants/a/runs/r_1.x"}, "RUN_NAME_INVALID", ["run"]),
        ({"tenant": "other"}, "TENANT_MISMATCH", ["tenant"]),
        ({"source_path": ""}, "ARTIFACT_MISSING", ["source_path"]),
        (
            {"limits": pb.Limits(pids=-1, memory_bytes=-1)},
            "LIMITS_INVALID",
            ["limits.memory_bytes", "limits.pids"],
        ),
        ({"deadline": seconds(-1)}, "DEADLINE_INVALID", ["deadline"]),
        ({"environment": {"FLNET_RUN": "x"}}, "ENVIRONMENT_INVALID", ["environment[FLNET_RUN]"]),
    ],
)
async def test_bad_launch_requests_are_invalid_arguments(
    orch: Orchestrator, fields: dict[str, object], reason: str, violations: list[str]
) -> None:
    fields.setdefault("source_path", str(orch.tool("pass")))
    error = await launch_error(orch, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(error) == (reason, violations)


async def test_unknown_run_is_not_found(orch: Orchestrator) -> None:
    run = orch.run_name()
    for call in (
        orch.stub.GetRunContainer(pb.GetRunContainerRequest(run=run)),
        orch.stub.StopRun(pb.StopRunRequest(run=run)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert details(info.value) == ("RUN_NOT_FOUND", [])


async def test_negative_grace_is_invalid(orch: Orchestrator) -> None:
    container = await orch.launch("pass")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await orch.stub.StopRun(pb.StopRunRequest(run=container.run, grace_period=seconds(-1)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(info.value) == ("GRACE_PERIOD_INVALID", ["grace_period"])
