"""A launch that finds no orchestrator (restarting, say) does not fail the run: the run waits
PENDING, says so in its history, and launches once an orchestrator answers, within its
deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.orchestrator.app import OrchestratorApp
from tests.identity import orchestrator_auth
from tests.integration.conftest import Stack, all_events

S = lc.RunState
WAITING = "waiting for an orchestrator"


async def notes(stack: Stack, run: str) -> list[str]:
    return [e.log.message for e in await all_events(stack.api, run) if e.HasField("log")]


async def wait_for_note(stack: Stack, run: str, text: str) -> None:
    async with asyncio.timeout(20):
        while not any(text in n for n in await notes(stack, run)):  # noqa: ASYNC110 - polls
            await asyncio.sleep(0.1)


async def test_a_run_waits_for_a_restarting_orchestrator_and_then_launches(
    stack: Stack, tmp_path: Path
) -> None:
    version = await stack.register()
    address = stack.control.settings.orchestrator_address
    await stack.orchestrator.stop()
    run = await stack.submit(version.name, mode="finish")
    await wait_for_note(stack, run.name, WAITING)
    await asyncio.sleep(1.5)  # several supervision passes: still waiting, not failed
    waiting = await stack.get(run.name)
    assert waiting.state == S.RUN_STATE_PENDING and not waiting.HasField("error")
    assert sum(WAITING in n for n in await notes(stack, run.name)) == 1  # said once

    back = OrchestratorApp(
        tmp_path / "orchestrator-again",
        kill_grace=2.0,
        auth=orchestrator_auth(),
    )
    await back.start(address)
    try:
        done = await stack.wait_state(run.name, within=60)
        assert done.state == S.RUN_STATE_FINISHED, done.error
        assert any("the run is launched" in n for n in await notes(stack, run.name))
    finally:
        await back.stop()


async def test_a_run_waiting_for_an_orchestrator_ends_at_its_deadline(stack: Stack) -> None:
    version = await stack.register("behave-deadline", deadline=2.0)
    await stack.orchestrator.stop()
    run = await stack.submit(version.name, mode="finish")
    done = await stack.wait_state(run.name, within=20)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_DEADLINE_EXCEEDED
    assert "before an orchestrator could launch it" in done.error.message
    assert any(WAITING in n for n in await notes(stack, run.name))
