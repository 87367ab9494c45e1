"""The real stack in-process: a control plane on a loopback port and an orchestrator
(process backend) attached to it; engines are real subprocesses started by the orchestrator.
Tests that kill a control plane start it as a process of its own (`start_control`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
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
from flnet.control.app import ControlApp
from flnet.orchestrator.app import OrchestratorApp
from flnet.toolspec import load_tool_spec
from tests.auth.issuer import Issuer
from tests.conftest import (
    FIXTURES,
    TENANT,
    Clients,
    attach_orchestrator,
    clients_for,
    control_app,
    control_settings,
    request_id,
)
from tests.identity import issuer_env
from tests.postgres import database_url
from tests.s3 import artifact_environment

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
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/{name}", tool_version=await self.api.with_source(spec)
            )
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
    control = control_app(control_settings(tmp_path))
    await control.start("127.0.0.1:0")
    address = f"127.0.0.1:{control.port}"
    orchestrator = await attach_orchestrator(address, tmp_path / "orchestrator")
    api = clients_for(address)
    yield Stack(api, control, orchestrator)
    await api.channel.close()
    await orchestrator.stop()
    await control.stop(0.5)


def start_control(
    data_dir: Path,
    port: int,
    issuer: Issuer,
    environment: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m flnet.control` with its data in `data_dir`, logging to control.log there.
    Its database and artifact store are the test's for `data_dir` (SQLite or PostgreSQL, files
    or S3: the same across a restart), unless `environment` says otherwise."""
    log = (data_dir / "control.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flnet.control",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(data_dir),
        ],
        stdout=log,
        stderr=log,
        env={
            **os.environ,
            **issuer_env(issuer),
            "FLNET_DATABASE_URL": database_url(data_dir),
            **artifact_environment(data_dir),
            **(environment or {}),
        },
    )


async def all_events(api: Clients, run: str) -> list[rp.RunEvent]:
    """Every stored event of `run`, page by page."""
    events: list[rp.RunEvent] = []
    token = ""
    while True:
        page = await api.runs.ListRunEvents(
            rs.ListRunEventsRequest(parent=run, page_size=10_000, page_token=token)
        )
        events += page.events
        token = page.next_page_token
        if not token:
            return events
