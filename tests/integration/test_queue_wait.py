"""A run that finds no orchestrator to run it (none attached, say, while one restarts) does
not fail: it waits PENDING in its tenant's queue, says why, and starts once an orchestrator
attaches, within its deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.control.fleet.scheduler import NO_ORCHESTRATOR
from tests.conftest import attach_orchestrator
from tests.integration.conftest import Stack

S = lc.RunState


async def test_a_run_waits_for_an_orchestrator_and_then_runs(stack: Stack, tmp_path: Path) -> None:
    version = await stack.register()
    await stack.orchestrator.stop()
    run = await stack.submit(version.name, mode="finish")
    async with asyncio.timeout(20):
        while (await stack.get(run.name)).queue.reason != NO_ORCHESTRATOR:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)  # several supervision passes: still waiting, not failed
    waiting = await stack.get(run.name)
    assert waiting.state == S.RUN_STATE_PENDING and not waiting.HasField("error")
    assert (waiting.queue.position, waiting.orchestrator) == (1, "")

    address = f"127.0.0.1:{stack.control.port}"
    back = await attach_orchestrator(address, tmp_path / "orchestrator-again", name="again")
    try:
        done = await stack.wait_state(run.name, within=60)
        assert done.state == S.RUN_STATE_FINISHED, done.error
        assert done.orchestrator == "orchestrators/again"
        assert not done.HasField("queue")
    finally:
        await back.stop()


async def test_a_run_waiting_to_be_placed_ends_at_its_deadline(stack: Stack) -> None:
    version = await stack.register("behave-deadline", deadline=2.0)
    await stack.orchestrator.stop()
    run = await stack.submit(version.name, mode="finish")
    done = await stack.wait_state(run.name, within=20)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_DEADLINE_EXCEEDED
    assert "deadline passed while it waited to be placed" in done.error.message
    assert NO_ORCHESTRATOR in done.error.message
    assert not done.HasField("queue") and not done.orchestrator
