"""Durations a command can carry but the orchestrator cannot use (an OverflowError in
timedelta or datetime arithmetic, which would be INTERNAL) are INVALID_ARGUMENT naming the
field."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from tests.orchestrator.helpers import CommandFailed, Orchestrator
from tests.orchestrator.test_errors import launch_error

BIG = 2**62
CENTURIES = 200 * 365 * 86_400  # now + this is no datetime (it was an OverflowError)


@pytest.mark.parametrize(
    ("duration", "field"),
    [
        (duration_pb2.Duration(seconds=BIG), "grace_period"),
        (duration_pb2.Duration(seconds=CENTURIES), "grace_period"),
        (duration_pb2.Duration(seconds=-BIG), "grace_period"),
        (duration_pb2.Duration(seconds=-1), "grace_period"),
        (duration_pb2.Duration(seconds=1, nanos=-1), "grace_period.nanos"),
    ],
)
async def test_stop_with_a_grace_period_out_of_range(
    orch: Orchestrator, duration: duration_pb2.Duration, field: str
) -> None:
    request = pb.StopRunRequest(run=orch.run_name(), grace_period=duration)
    with pytest.raises(CommandFailed) as raised:
        await orch.command(sp.FleetCommand(stop=request))
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details == ("GRACE_PERIOD_INVALID", [field])


@pytest.mark.parametrize("seconds", [BIG, CENTURIES, -BIG])
async def test_launch_with_a_deadline_out_of_range(orch: Orchestrator, seconds: int) -> None:
    deadline = duration_pb2.Duration(seconds=seconds)
    error = await launch_error(orch, source_path=str(orch.tool("pass")), deadline=deadline)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details == ("DEADLINE_INVALID", ["deadline"])
    assert not await orch.list(include_exited=True)  # nothing was started
