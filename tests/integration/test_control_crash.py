"""kill -9 of the control plane in the middle of a run that logs 100,000 lines: after a
restart the engine reconnects and resends what was not acknowledged, the run finishes, and
the store holds exactly the 100,000 lines, in order, without duplicates."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.cli.stack import free_port, wait_healthy
from flnet.orchestrator.app import OrchestratorApp
from tests.auth.issuer import Issuer
from tests.conftest import clients_for
from tests.identity import IDENTITY, control_client_env, orchestrator_auth
from tests.integration.conftest import Stack
from tests.postgres import database_url
from tests.s3 import artifact_environment

LINES = 100_000


def start_control(
    data_dir: Path, port: int, orchestrator: str, issuer: Issuer
) -> subprocess.Popen[bytes]:
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
            "--orchestrator",
            orchestrator,
        ],
        stdout=log,
        stderr=log,
        # The test's database and artifact store (the same across the restart): SQLite or
        # PostgreSQL (tests.postgres), files or S3 (tests.s3).
        env={
            **os.environ,
            **control_client_env(issuer),
            "FLNET_DATABASE_URL": database_url(data_dir),
            **artifact_environment(data_dir),
        },
    )


@pytest.fixture
async def orchestrator(tmp_path: Path, http_issuer: Issuer) -> AsyncIterator[OrchestratorApp]:
    auth = orchestrator_auth(http_issuer.url)
    app = OrchestratorApp(tmp_path / "orchestrator", kill_grace=2.0, auth=auth)
    await app.start("127.0.0.1:0")
    yield app
    await app.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_9_of_the_control_plane_loses_and_duplicates_nothing(
    tmp_path: Path, orchestrator: OrchestratorApp, http_issuer: Issuer
) -> None:
    data = tmp_path / "control"
    data.mkdir()
    port = free_port()
    orch = f"127.0.0.1:{orchestrator.port}"
    control = start_control(data, port, orch, http_issuer)
    token = IDENTITY.token(issuer=http_issuer.url)
    try:
        await wait_healthy(f"127.0.0.1:{port}")
        api = clients_for(f"127.0.0.1:{port}", token)
        stack = Stack(api, None, orchestrator)  # type: ignore[arg-type]
        version = await stack.register()
        run = await stack.submit(version.name, mode="finish", lines=LINES)
        while (current := await stack.get(run.name)).last_sequence < 5_000:
            assert current.state in (
                lc.RUN_STATE_PENDING,
                lc.RUN_STATE_INITIALIZED,
                lc.RUN_STATE_STARTED,
                lc.RUN_STATE_RUNNING,
            )
            await asyncio.sleep(0.005)
        os.kill(control.pid, signal.SIGKILL)
        control.wait()
        killed_at = current.last_sequence
        assert current.state == lc.RUN_STATE_RUNNING, "the run ended before the kill"
        await api.channel.close()

        control = start_control(data, port, orch, http_issuer)  # same address, same database
        await wait_healthy(f"127.0.0.1:{port}")
        api = clients_for(f"127.0.0.1:{port}", token)
        stack = Stack(api, None, orchestrator)  # type: ignore[arg-type]
        done = await stack.wait_state(run.name, within=180)
        assert done.state == lc.RUN_STATE_FINISHED, done.error
        assert done.last_sequence > killed_at

        messages: list[str] = []
        sequences: list[int] = []
        token = ""
        while True:
            page = await api.runs.ListRunEvents(
                rs.ListRunEventsRequest(parent=run.name, page_size=10_000, page_token=token)
            )
            sequences += [e.sequence for e in page.events]
            messages += [e.log.message for e in page.events if e.HasField("log")]
            token = page.next_page_token
            if not token:
                break
        assert sequences == list(range(1, len(sequences) + 1))
        lines = [m for m in messages if m.startswith("line ")]
        assert len(lines) == LINES
        assert lines == [f"line {i}" for i in range(LINES)]
        await api.channel.close()
    finally:
        control.send_signal(signal.SIGTERM)
        control.wait(timeout=30)
