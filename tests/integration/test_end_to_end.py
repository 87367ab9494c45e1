"""Runs through the whole stack: control plane, orchestrator, and the real engine in a
subprocess driving a real tool. Each way a run can end, as provenance records it."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.orchestrator.v1 import orchestrator_pb2 as op
from flnet.orchestrator.backend import RunName
from flnet.orchestrator.convert import container_to_proto
from flnet.structs import dict_to_struct
from tests.conftest import TENANT, request_id
from tests.integration.conftest import Stack

S = lc.RunState


async def test_run_finishes_with_verified_outputs(stack: Stack) -> None:
    version = await stack.register()
    run = await stack.submit(version.name, mode="finish", lines=25)
    assert run.state == S.RUN_STATE_PENDING
    done = await stack.wait_state(run.name)
    assert done.state == S.RUN_STATE_FINISHED, done.error
    [output] = done.outputs
    data = b""
    async for msg in stack.api.artifacts.DownloadArtifact(
        asv.DownloadArtifactRequest(name=output.name)
    ):
        data += msg.data
    assert hashlib.sha256(data).hexdigest() == output.sha256
    events = (await stack.api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=run.name))).events
    states = [e.state_change.to_state for e in events if e.HasField("state_change")]
    assert states == [
        S.RUN_STATE_PENDING,
        S.RUN_STATE_INITIALIZED,
        S.RUN_STATE_STARTED,
        S.RUN_STATE_RUNNING,
        S.RUN_STATE_FINISHED,
    ]
    logs = [e.log.message for e in events if e.HasField("log")]
    assert [m for m in logs if m.startswith("line ")] == [f"line {i}" for i in range(25)]


async def test_tool_exception_is_an_error_with_traceback(stack: Stack) -> None:
    version = await stack.register()
    run = await stack.submit(version.name, mode="fail")
    done = await stack.wait_state(run.name)
    assert done.state == S.RUN_STATE_ERROR
    e = done.error
    assert (e.reason, e.kind, e.phase) == (
        lc.ERROR_REASON_TOOL_EXCEPTION,
        lc.ERROR_KIND_TOOL,
        S.RUN_STATE_RUNNING,
    )
    assert e.error_type == "ValueError"
    assert "the tool failed on purpose" in e.message
    assert "Traceback" in e.traceback and "tool.py" in e.traceback


@pytest.mark.parametrize(
    ("mode", "reason", "message", "where"),
    [
        ("invalid_input", lc.ERROR_REASON_INPUT_INVALID, "row 3 has no 'label' column", "input"),
        (
            "invalid_config",
            lc.ERROR_REASON_CONFIG_INVALID,
            "seconds must exceed wait when lines are asked for",
            "path",
        ),
    ],
)
async def test_a_tool_can_say_its_user_is_at_fault(
    stack: Stack, mode: str, reason: int, message: str, where: str
) -> None:
    """InvalidInput and InvalidConfig end the run as the user's fault, with the tool's
    message and where it is at fault, without a traceback in the error or the run's log."""
    version = await stack.register()
    run = await stack.submit(version.name, mode=mode)
    done = await stack.wait_state(run.name)
    assert done.state == S.RUN_STATE_ERROR
    e = done.error
    assert (e.reason, e.kind, e.phase, e.retry_safe) == (
        reason,
        lc.ERROR_KIND_USER,
        S.RUN_STATE_RUNNING,
        False,
    )
    assert e.message == message
    assert e.error_type == mode.title().replace("_", "")
    assert e.context[where] == {"input": "data", "path": "seconds"}[where]
    assert e.traceback == ""
    events = (await stack.api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=run.name))).events
    assert not [ev for ev in events if ev.HasField("log") and ev.log.traceback]


async def test_what_a_tool_prints_is_in_its_log(stack: Stack) -> None:
    version = await stack.register()
    run = await stack.submit(version.name, mode="print", lines=3)
    done = await stack.wait_state(run.name)
    assert done.state == S.RUN_STATE_FINISHED, done.error
    events = (await stack.api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=run.name))).events
    printed = [
        (e.log.logger, e.log.severity, e.log.message)
        for e in events
        if e.HasField("log") and e.log.logger in ("stdout", "stderr")
    ]
    info, warning = tm.LOG_SEVERITY_INFO, tm.LOG_SEVERITY_WARNING
    assert printed == [
        ("stdout", info, "printed 0"),
        ("stdout", info, "printed 1"),
        ("stdout", info, "printed 2"),
        ("stderr", warning, "to stderr"),
        ("stdout", info, "no newline at the end"),
    ]


async def test_nonzero_exit_is_an_error_with_its_code(stack: Stack) -> None:
    version = await stack.register()
    run = await stack.submit(version.name, mode="exit", exit_code=3)
    done = await stack.wait_state(run.name)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_EXIT_NONZERO
    assert done.error.context["exit_code"] == "3"
    assert not done.error.retry_safe


async def test_deadline_exceeded(stack: Stack) -> None:
    version = await stack.register("slow", deadline=2.0)
    run = await stack.submit(version.name, mode="sleep", seconds=60, ignore_cancel=True)
    done = await stack.wait_state(run.name, within=30)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_DEADLINE_EXCEEDED
    assert done.error.kind == lc.ERROR_KIND_TOOL


async def test_missing_required_output(stack: Stack) -> None:
    version = await stack.register()
    run = await stack.submit(version.name, mode="skip_output")
    done = await stack.wait_state(run.name)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_OUTPUT_MISSING


async def test_memory_limit(stack: Stack) -> None:
    version = await stack.register()
    run = await stack.submit(version.name, mode="allocate", megabytes=2048)
    done = await stack.wait_state(run.name)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_OOM_KILLED


async def container_of(stack: Stack, run: str) -> op.RunContainer:
    return container_to_proto(await stack.orchestrator.backend.get(RunName.parse(run)))


async def test_cancel_while_running(stack: Stack) -> None:
    version = await stack.register()
    run = await stack.submit(version.name, mode="sleep", seconds=60)
    await stack.wait_state(run.name, S.RUN_STATE_RUNNING)
    await stack.api.runs.CancelRun(rs.CancelRunRequest(name=run.name, reason="changed my mind"))
    done = await stack.wait_state(run.name, within=30)
    assert done.state == S.RUN_STATE_CANCELLED
    assert done.cancellation.reason == "changed my mind"
    assert done.cancellation.teardown.ToMilliseconds() < 2000  # the tool cooperated
    for _ in range(50):
        if (await container_of(stack, run.name)).state == op.CONTAINER_STATE_EXITED:
            break
        await asyncio.sleep(0.1)
    assert (await container_of(stack, run.name)).state == op.CONTAINER_STATE_EXITED


async def test_cancel_of_a_tool_that_ignores_it(stack: Stack) -> None:
    version = await stack.register()
    run = await stack.submit(version.name, mode="sleep", seconds=60, ignore_cancel=True)
    await stack.wait_state(run.name, S.RUN_STATE_RUNNING)
    await stack.api.runs.CancelRun(rs.CancelRunRequest(name=run.name, reason="stop"))
    done = await stack.wait_state(run.name, within=30)
    assert done.state == S.RUN_STATE_CANCELLED
    # The tool had the grace period (2 s) to stop; the engine reports CANCELLED within it,
    # keeping a 20 % margin to flush before the orchestrator's forced stop.
    assert done.cancellation.teardown.ToMilliseconds() >= 1500
    for _ in range(100):
        if (await container_of(stack, run.name)).state == op.CONTAINER_STATE_EXITED:
            break
        await asyncio.sleep(0.1)
    assert (await container_of(stack, run.name)).state == op.CONTAINER_STATE_EXITED


async def test_many_runs_at_once(stack: Stack) -> None:
    version = await stack.register()
    runs = [await stack.submit(version.name, mode="finish", lines=100) for _ in range(8)]
    done = await asyncio.gather(*(stack.wait_state(r.name, within=120) for r in runs))
    assert [d.state for d in done] == [S.RUN_STATE_FINISHED] * 8


async def test_a_retried_create_of_a_queued_run_runs_it_once(stack: Stack) -> None:
    """The run is queued in the transaction that records it: a retry under the same
    request_id (its first answer lost) finds it, and nothing is launched twice."""
    version = await stack.register()
    await stack.control.runs.context.placer.close()  # nothing is placed for now
    request = rs.CreateRunRequest(
        parent=TENANT,
        request_id=request_id(),
        run=rp.Run(tool_version=version.name, config=dict_to_struct({"mode": "finish"})),
    )
    first = (await stack.api.runs.CreateRun(request)).run
    retried = (await stack.api.runs.CreateRun(request)).run
    assert (retried.name, retried.state) == (first.name, S.RUN_STATE_PENDING)
    assert retried.queue.position == 1
    assert not retried.orchestrator
    stack.control.runs.context.placer.start()
    done = await stack.wait_state(first.name)
    assert done.state == S.RUN_STATE_FINISHED, done.error
    assert done.orchestrator == "orchestrators/local"
    again = (await stack.api.runs.CreateRun(request)).run  # ended: returned as it is
    assert (again.name, again.state) == (first.name, S.RUN_STATE_FINISHED)
    containers = await stack.orchestrator.backend.list(include_exited=True)
    assert [str(c.run) for c in containers] == [first.name]
