"""Chaos soak: runs of the behave tool while the control plane, the orchestrator and engines
are killed -9 at random moments (seeded). Afterwards every run has ended, every history is
gapless and free of duplicates with one end, and nothing is left behind: no engine process,
no work directory, no half-written blob. On the session's database (SQLite, or PostgreSQL in
the PostgreSQL pass)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from flnet import lifecycle
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.cli.stack import free_port, wait_healthy, wait_log_line
from flnet.orchestrator.link import ATTACHED_LINE
from flnet.structs import dict_to_struct
from tests.auth.issuer import Issuer
from tests.conftest import TENANT, Clients, clients_for, request_id
from tests.identity import IDENTITY, orchestrator_client_env
from tests.integration.conftest import Stack, all_events, start_control

T = TypeVar("T")
SEED = int(os.environ.get("FLNET_CHAOS_SEED", "20261203"))
CHAOS_SECONDS = float(os.environ.get("FLNET_CHAOS_SECONDS", "60"))
RUNS = 16
# (config, whether a run left alone finishes)
MIXES: list[tuple[dict[str, object], bool]] = [
    ({"mode": "finish", "lines": 3000, "wait": 1.0}, True),
    ({"mode": "finish", "seconds": 4.0}, True),
    ({"mode": "sleep", "seconds": 6.0}, True),
    ({"mode": "fail"}, False),
    ({"mode": "exit", "exit_code": 7}, False),
]


@dataclass
class Components:
    """The control plane and the orchestrator as processes of their own, restartable."""

    root: Path
    issuer: Issuer
    control_port: int = field(default_factory=free_port)
    control: subprocess.Popen[bytes] | None = None
    orchestrator: subprocess.Popen[bytes] | None = None
    attached_from: int = 0  # where the orchestrator's log was when it last started

    @property
    def control_dir(self) -> Path:
        return self.root / "control"

    @property
    def orchestrator_dir(self) -> Path:
        return self.root / "orchestrator"

    @property
    def orchestrator_log(self) -> Path:
        return self.orchestrator_dir / "orchestrator.log"

    def start_orchestrator(self) -> None:
        self.orchestrator_dir.mkdir(exist_ok=True)
        self.attached_from = (
            self.orchestrator_log.stat().st_size if self.orchestrator_log.exists() else 0
        )
        log = self.orchestrator_log.open("ab")
        self.orchestrator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flnet.orchestrator",
                "--control",
                f"127.0.0.1:{self.control_port}",
                "--name",
                "soak",
                "--data-dir",
                str(self.orchestrator_dir),
                "--backend",
                "process",
                "--kill-grace",
                "2",
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, **orchestrator_client_env(self.issuer)},
        )

    def start_control(self) -> None:
        self.control_dir.mkdir(exist_ok=True)
        self.control = start_control(self.control_dir, self.control_port, self.issuer)

    async def healthy(self) -> None:
        """The control plane serves and the orchestrator has attached (since its start)."""
        await wait_healthy(f"127.0.0.1:{self.control_port}")
        await wait_log_line(self.orchestrator_log, ATTACHED_LINE, self.attached_from, 60)

    def kill(self, which: str) -> None:
        process = getattr(self, which)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
        setattr(self, which, None)

    def engines(self) -> list[int]:
        """Engine processes: those working in a run's work dir of our orchestrator."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")).is_relative_to(self.orchestrator_dir):
                    found.append(int(entry.name))
        return found

    def stop(self) -> None:
        for which in ("control", "orchestrator"):
            process = getattr(self, which)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
async def components(tmp_path: Path, http_issuer: Issuer) -> AsyncIterator[Components]:
    parts = Components(tmp_path, http_issuer)
    parts.start_control()
    parts.start_orchestrator()
    try:
        await parts.healthy()
        yield parts
    finally:
        parts.stop()
        for pid in parts.engines():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


async def retried(call: Callable[[], Awaitable[T]], *, within: float = 60.0) -> T:
    """`call()` until the control plane answers (it may be down, or restarting)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def chaos(parts: Components, rng: random.Random, until: float) -> list[str]:
    """Kills a component or an engine every few seconds; restarts the components."""
    kills: list[str] = []
    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(2.0, 5.0))
        victim = rng.choice(["control", "orchestrator", "engine", "engine"])
        if victim == "engine":
            engines = parts.engines()
            if not engines:
                continue
            pid = rng.choice(engines)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            kills.append(f"engine {pid}")
            continue
        parts.kill(victim)
        kills.append(victim)
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        getattr(parts, f"start_{victim}")()
    return kills


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_runs_survive_kill_9_of_every_component(components: Components) -> None:
    rng = random.Random(SEED)
    token = IDENTITY.token(issuer=components.issuer.url)
    api: Clients = clients_for(f"127.0.0.1:{components.control_port}", token)
    stack = Stack(api, None, None)  # type: ignore[arg-type]
    version = await retried(stack.register)
    until = time.monotonic() + CHAOS_SECONDS
    chaos_task = asyncio.create_task(chaos(components, rng, until))
    runs: list[str] = []
    for _ in range(RUNS):
        config, _ = rng.choice(MIXES)
        request = rs.CreateRunRequest(
            parent=TENANT,
            request_id=request_id(),
            run=rp.Run(tool_version=version.name, config=dict_to_struct(config)),
        )
        created = await retried(functools.partial(api.runs.CreateRun, request))
        runs.append(created.run.name)
        await asyncio.sleep(rng.uniform(0.5, CHAOS_SECONDS / RUNS))
    kills = await chaos_task
    assert {"control", "orchestrator"} <= {k.split()[0] for k in kills}, kills

    # Everyone back, nothing killed any more: every run ends.
    if components.control is None:
        components.start_control()
    if components.orchestrator is None:
        components.start_orchestrator()
    await components.healthy()
    for name in runs:
        run = await retried(functools.partial(stack.wait_state, name, within=180), within=240)
        assert lifecycle.is_terminal(run.state)
        events = await retried(functools.partial(all_events, api, name))
        sequences = [e.sequence for e in events]
        assert sequences == list(range(1, len(sequences) + 1)), f"{name}: a gap or a duplicate"
        ends = [
            e
            for e in events
            if e.HasField("state_change") and lifecycle.is_terminal(e.state_change.to_state)
        ]
        assert len(ends) == 1, name
        logged = [e.log.message for e in events if e.HasField("log")]
        lines = [m for m in logged if m.startswith("line ")]
        assert lines == [f"line {i}" for i in range(len(lines))], f"{name}: a line lost or repeated"

    # Nothing left behind once the runs have ended.
    for _ in range(150):
        if not components.engines():
            break
        await asyncio.sleep(0.2)
    left = {pid: Path(f"/proc/{pid}/cwd").resolve().name for pid in components.engines()}
    assert not left, f"engines left running (pid: run work dir): {left}"
    runs_dir = components.orchestrator_dir / "orchestrator" / "runs"
    for _ in range(60):
        if not (runs_dir.exists() and any(runs_dir.iterdir())):
            break
        await asyncio.sleep(0.5)
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), list(runs_dir.iterdir())
    tmp = components.control_dir / "artifacts" / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), list(tmp.iterdir())
    await api.channel.close()
