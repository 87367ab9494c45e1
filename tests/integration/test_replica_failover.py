"""Two control-plane replicas behind one client, sharing one PostgreSQL, one artifact store and
one run-credential key; the engine is given both addresses. The replica holding the engine is
killed (-9) in the middle of a run that logs 50,000 lines, then reports progress for 3 s: the
engine moves to the other replica and resumes its sequence there, the client's calls go there
too, and the run finishes. A watcher on the surviving replica, following the run from its
first event, saw every event exactly once, in order: exactly what is stored."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.cli.stack import free_port, wait_healthy
from flnet.orchestrator.app import OrchestratorApp
from tests.auth.issuer import Issuer
from tests.conftest import attach_orchestrator, clients_for
from tests.identity import IDENTITY
from tests.integration.conftest import Stack, all_events, start_control
from tests.postgres import POSTGRESQL, backend, database_url
from tests.s3 import artifact_environment

LINES = 50_000


def engine_connected(data_dir: Path, run: str) -> bool:
    """Whether the control plane logging in `data_dir` welcomed the run's engine."""
    return f"the engine of {run} connected" in (data_dir / "control.log").read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_replica_killed_mid_run_loses_and_repeats_nothing(
    tmp_path: Path, http_issuer: Issuer
) -> None:
    if backend() != POSTGRESQL:
        pytest.skip("replicas share a PostgreSQL database: the --database postgresql pass")
    shared = tmp_path / "shared"
    shared.mkdir()
    ports = [free_port(), free_port()]
    both = f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"  # in order: A first
    environment = {
        "FLNET_DATABASE_URL": database_url(shared),
        **artifact_environment(shared),
        "FLNET_RUNTIME_KEY_FILE": str(shared / "runtime.pem"),
        "FLNET_ENGINE_ADDRESS": both,
    }
    dirs = [tmp_path / "a", tmp_path / "b"]
    replicas = []
    for data_dir, port in zip(dirs, ports, strict=True):
        data_dir.mkdir()
        replicas.append(start_control(data_dir, port, http_issuer, environment))
    token = IDENTITY.token(issuer=http_issuer.url)
    orchestrator: OrchestratorApp | None = None
    try:
        for port in ports:
            await wait_healthy(f"127.0.0.1:{port}")
        # Attached to A while it lives, then to B.
        orchestrator = await attach_orchestrator(
            both, tmp_path / "orchestrator", issuer=http_issuer.url
        )
        api = clients_for(both, token)  # the one client, answered by A while it lives
        on_b = clients_for(f"127.0.0.1:{ports[1]}", token)
        stack = Stack(api, None, orchestrator)  # type: ignore[arg-type]
        version = await stack.register()
        # The lines, then 3 s of progress reports: the kill below comes well before the end.
        run = await stack.submit(version.name, mode="sleep", lines=LINES, seconds=3.0)
        seen: list[rp.RunEvent] = []
        watching = asyncio.create_task(on_b.watch(run.name, seen))
        while (current := await stack.get(run.name)).last_sequence < 2_000:
            assert not lifecycle.is_terminal(current.state), current.error
            await asyncio.sleep(0.005)
        assert engine_connected(dirs[0], run.name)
        assert not engine_connected(dirs[1], run.name)
        os.kill(replicas[0].pid, signal.SIGKILL)
        replicas[0].wait()
        after_kill = (await on_b.runs.GetRun(rs.GetRunRequest(name=run.name))).run
        assert after_kill.state == lc.RUN_STATE_RUNNING, "the run ended before the kill"

        done = await stack.wait_state(run.name, within=180)
        assert done.state == lc.RUN_STATE_FINISHED, done.error
        assert done.last_sequence > current.last_sequence
        assert engine_connected(dirs[1], run.name)  # the engine moved to B
        assert [o.output_name for o in done.outputs] == ["result"]
        async with asyncio.timeout(30):
            await watching
        assert [e.sequence for e in seen] == list(range(1, done.last_sequence + 1))
        lines = [e.log.message for e in seen if e.log.message.startswith("line ")]
        assert lines == [f"line {i}" for i in range(LINES)]
        assert seen == await all_events(on_b, run.name)
        for client in (api, on_b):
            await client.channel.close()
    finally:
        if orchestrator is not None:
            await orchestrator.stop()
        for replica in replicas:
            if replica.poll() is None:
                replica.send_signal(signal.SIGTERM)
                replica.wait(timeout=30)
