"""The real stack in-process: an orchestrator (process backend) and a control plane on
loopback ports; engines are real subprocesses started by the orchestrator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2

from flnet import lifecycle
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.cli.toolspec import load_tool_spec
from flnet.control.app import ControlApp
from flnet.orchestrator.app import OrchestratorApp
from tests.conftest import (
    FIXTURES,
    TENANT,
    Clients,
    clients_for,
    control_app,
    control_settings,
    request_id,
)
from tests.identity import orchestrator_auth

BEHAVE = FIXTURES / "tools" / "behave"


@dataclass
class Stack:
    api: Clients
    control: ControlApp
    orchestrator: OrchestratorApp

    async def register(self, name: str = "behave", **timeouts: float) -> tp.ToolVersion:
        """The behave tool, optionally under another name with other timeouts (seconds)."""
        spec = load_tool_spec(BEHAVE)
        for field, value in timeouts.items():
            getattr(spec.version.timeouts, field).FromNanoseconds(int(value * 1e9))
        res = await self.api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(parent=f"{TENANT}/tools/{name}", tool_version=spec.version)
        )
        return res.tool_version

    async def submit(self, version: str, **config: Any) -> rp.Run:
        s = struct_pb2.Struct()
        s.update(config)
        req = rs.CreateRunRequest(
            parent=TENANT, request_id=request_id(), run=rp.Run(tool_version=version, config=s)
        )
        return (await self.api.runs.CreateRun(req)).run

    async def get(self, run: str) -> rp.Run:
        return (await self.api.runs.GetRun(rs.GetRunRequest(name=run))).run

    async def wait_state(self, run: str, *states: int, within: float = 60.0) -> rp.Run:
        """Polls until the run is in one of `states` (or terminal when none is given)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            current = await self.get(run)
            if (current.state in states) if states else lifecycle.is_terminal(current.state):
                return current
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"{run} is {lifecycle.state_name(current.state)} after {within} s"
                )
            await asyncio.sleep(0.1)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    orchestrator = OrchestratorApp(
        tmp_path / "orchestrator", kill_grace=2.0, auth=orchestrator_auth()
    )
    orch_port = await orchestrator.start("127.0.0.1:0")
    control = control_app(control_settings(tmp_path, orchestrator_address=f"127.0.0.1:{orch_port}"))
    await control.start("127.0.0.1:0")
    api = clients_for(f"127.0.0.1:{control.port}")
    yield Stack(api, control, orchestrator)
    await api.channel.close()
    await control.stop(0.5)
    await orchestrator.stop()
