"""Refused commands: their CommandResult's status code, message and rich details (NOT_FOUND,
INVALID_ARGUMENT with ErrorInfo reason and domain, BadRequest field violations), as the one
error mapping names them."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.orchestrator.errors import NotFound
from tests.orchestrator.helpers import CommandFailed, Orchestrator, seconds


async def launch_error(orch: Orchestrator, **fields: Any) -> CommandFailed:
    fields.setdefault("run", orch.run_name())
    with pytest.raises(CommandFailed) as info:
        await orch.launch(None, **fields)
    return info.value


async def test_missing_source_is_not_found(orch: Orchestrator) -> None:
    error = await launch_error(orch, source_path=str(orch.tmp_path / "nowhere"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.details == ("SOURCE_NOT_FOUND", [])


async def test_image_digest_is_invalid_on_the_process_backend(orch: Orchestrator) -> None:
    error = await launch_error(orch, image_digest="sha256:" + "0" * 64)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "process backend runs local source only" in error.message
    assert error.details == ("IMAGE_NOT_SUPPORTED", ["image_digest"])


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
        (  # a standby engine's FIFO: no request may point an engine at one
            {"environment": {"FLNET_ASSIGNMENT": "/tmp/x"}},
            "ENVIRONMENT_INVALID",
            ["environment[FLNET_ASSIGNMENT]"],
        ),
    ],
)
async def test_bad_launch_commands_are_invalid_arguments(
    orch: Orchestrator, fields: dict[str, object], reason: str, violations: list[str]
) -> None:
    fields.setdefault("source_path", str(orch.tool("pass")))
    fields.setdefault("run", orch.run_name())
    error = await launch_error(orch, **fields)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details == (reason, violations)
    assert error.result.run == fields["run"]
    assert not error.result.HasField("container")


async def test_unknown_run_is_not_found(orch: Orchestrator) -> None:
    run = orch.run_name()
    with pytest.raises(CommandFailed) as info:
        await orch.stop(run)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.details == ("RUN_NOT_FOUND", [])
    # What the backend says of it (the registration's source).
    with pytest.raises(NotFound) as raised:
        await orch.get(run)
    assert raised.value.reason == "RUN_NOT_FOUND"


async def test_negative_grace_is_invalid(orch: Orchestrator) -> None:
    container = await orch.launch("pass")
    with pytest.raises(CommandFailed) as info:
        await orch.stop(container.run, -1)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details == ("GRACE_PERIOD_INVALID", ["grace_period"])
