"""kill -9 of the control plane in the middle of a run that logs 100,000 lines: after a
restart the engine reconnects and resends what was not acknowledged, the run finishes, and
the store holds exactly the 100,000 lines, in order, without duplicates."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.cli.stack import free_port, wait_healthy
from flnet.orchestrator.app import OrchestratorApp
from tests.auth.issuer import Issuer
from tests.conftest import attach_orchestrator, clients_for
from tests.identity import IDENTITY
from tests.integration.conftest import Stack, all_events, start_control

LINES = 100_000


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_9_of_the_control_plane_loses_and_duplicates_nothing(
    tmp_path: Path, http_issuer: Issuer
) -> None:
    data = tmp_path / "control"
    data.mkdir()
    port = free_port()
    control = start_control(data, port, http_issuer)
    token = IDENTITY.token(issuer=http_issuer.url)
    orchestrator: OrchestratorApp | None = None
    try:
        await wait_healthy(f"127.0.0.1:{port}")
        orchestrator = await attach_orchestrator(
            f"127.0.0.1:{port}", tmp_path / "orchestrator", issuer=http_issuer.url
        )
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

        control = start_control(data, port, http_issuer)  # same address, same database
        await wait_healthy(f"127.0.0.1:{port}")
        api = clients_for(f"127.0.0.1:{port}", token)
        stack = Stack(api, None, orchestrator)  # type: ignore[arg-type]
        done = await stack.wait_state(run.name, within=180)
        assert done.state == lc.RUN_STATE_FINISHED, done.error
        assert done.last_sequence > killed_at

        events = await all_events(api, run.name)
        sequences = [e.sequence for e in events]
        messages = [e.log.message for e in events if e.HasField("log")]
        assert sequences == list(range(1, len(sequences) + 1))
        lines = [m for m in messages if m.startswith("line ")]
        assert len(lines) == LINES
        assert lines == [f"line {i}" for i in range(LINES)]
        await api.channel.close()
    finally:
        if orchestrator is not None:
            await orchestrator.stop()
        control.send_signal(signal.SIGTERM)
        control.wait(timeout=30)
