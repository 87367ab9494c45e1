"""Fixtures of the orchestrator tests: a real OrchestratorApp on 127.0.0.1:0, started in the
test's loop, talked to through the generated stub, with the engine replaced by a fake that
runs `tool.py` from the run's FLNET_TOOL_DIR. Each test writes its tool as a small script."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flnet.api.orchestrator.v1 import orchestrator_service_pb2_grpc as pb_grpc
from flnet.channels import insecure_channel
from flnet.orchestrator.app import OrchestratorApp
from tests.identity import IDENTITY, orchestrator_auth
from tests.orchestrator.helpers import FAKE_ENGINE, Orchestrator, StartOrchestrator


@pytest.fixture
def fake_engine(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_ENGINE)
    return [sys.executable, str(script)]


@pytest.fixture
async def start_orchestrator(
    tmp_path: Path, fake_engine: list[str]
) -> AsyncIterator[StartOrchestrator]:
    """Starts orchestrators with OrchestratorApp keyword arguments (defaults: the fake engine,
    kill_grace 1 s; `data_dir` to share one); stops them and closes their channels at
    teardown."""
    started: list[tuple[OrchestratorApp, Any]] = []

    async def start(data_dir: Path | None = None, **kwargs: Any) -> Orchestrator:
        data_dir = data_dir or tmp_path / f"data{len(started)}"
        kwargs.setdefault("engine_command", fake_engine)
        kwargs.setdefault("kill_grace", 1.0)
        kwargs.setdefault("auth", orchestrator_auth())
        kwargs.setdefault("stop_grace", 1.0)
        app = OrchestratorApp(data_dir, **kwargs)
        port = await app.start("127.0.0.1:0")
        address = f"127.0.0.1:{port}"
        channel = insecure_channel(address, IDENTITY.orchestrator_token())
        started.append((app, channel))
        return Orchestrator(
            app=app,
            stub=pb_grpc.OrchestratorServiceStub(channel),
            address=address,
            data_dir=data_dir,
            tmp_path=tmp_path,
        )

    yield start
    for app, channel in reversed(started):
        await channel.close()
        await app.stop()


@pytest.fixture
async def orch(start_orchestrator: StartOrchestrator) -> Orchestrator:
    return await start_orchestrator()


@pytest.fixture
async def orch_keep(start_orchestrator: StartOrchestrator) -> Orchestrator:
    """An orchestrator that keeps exited runs' work dirs, so tests can read their output."""
    return await start_orchestrator(keep_workdirs=True)
