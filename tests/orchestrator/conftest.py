"""Fixtures of the orchestrator tests: a real OrchestratorApp, started in the test's loop and
attached to the test's own control-plane side of the session (HandControl), with the engine
replaced by a fake that runs `tool.py` from the run's FLNET_TOOL_DIR. Each test writes its
tool as a small script."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flnet.orchestrator.app import OrchestratorApp
from tests.identity import orchestrator_token
from tests.orchestrator.hand_control import HandControl
from tests.orchestrator.helpers import (
    FAKE_ENGINE,
    ORCHESTRATOR_IDENTITY,
    Orchestrator,
    StartOrchestrator,
    attach,
)


@pytest.fixture
def fake_engine(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_ENGINE)
    return [sys.executable, str(script)]


@pytest.fixture
async def hand_control() -> AsyncIterator[HandControl]:
    control = HandControl()
    await control.start()
    yield control
    await control.stop()


@pytest.fixture
async def start_orchestrator(
    tmp_path: Path, fake_engine: list[str], hand_control: HandControl
) -> AsyncIterator[StartOrchestrator]:
    """Starts orchestrators with OrchestratorApp keyword arguments (defaults: the fake engine,
    kill_grace 1 s; `data_dir` to share one), each attached to the test's HandControl; stops
    them at teardown."""
    started: list[OrchestratorApp] = []

    async def start(data_dir: Path | None = None, **kwargs: Any) -> Orchestrator:
        data_dir = data_dir or tmp_path / f"data{len(started)}"
        kwargs.setdefault("engine_command", fake_engine)
        kwargs.setdefault("kill_grace", 1.0)
        kwargs.setdefault("identity", ORCHESTRATOR_IDENTITY)
        kwargs.setdefault("token", orchestrator_token)
        app = OrchestratorApp(data_dir, control_address=hand_control.address, **kwargs)
        started.append(app)
        since = await attach(app, hand_control)
        return Orchestrator(
            app=app, control=hand_control, data_dir=data_dir, tmp_path=tmp_path, since=since
        )

    yield start
    for app in reversed(started):
        await app.stop()


@pytest.fixture
async def orch(start_orchestrator: StartOrchestrator) -> Orchestrator:
    return await start_orchestrator()


@pytest.fixture
async def orch_keep(start_orchestrator: StartOrchestrator) -> Orchestrator:
    """An orchestrator that keeps exited runs' work dirs, so tests can read their output."""
    return await start_orchestrator(keep_workdirs=True)
