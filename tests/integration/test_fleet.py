"""The fleet with real orchestrators (process backend) and real engines: runs spread over two
orchestrators by capacity and labels; an orchestrator killed -9 mid-run (its engines with it,
as when its host dies); a control plane killed -9 while runs are queued."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.cli.stack import free_port, wait_healthy, wait_log_line
from flnet.orchestrator.link import ATTACHED_LINE
from flnet.toolspec import load_tool_spec
from tests.auth.issuer import Issuer
from tests.conftest import TENANT, attach_orchestrator, clients_for, control_app, control_settings
from tests.identity import IDENTITY, orchestrator_client_env
from tests.integration.conftest import BEHAVE, Stack, all_events, start_control

S = lc.RunState

# An engine command whose first launch starts at once and every later one only after a
# minute: their runs stay PENDING (placed, their engine not yet connected).
SLOW_ENGINE = """\
import os, pathlib, sys, time
marks = pathlib.Path(sys.argv[1])
marks.mkdir(exist_ok=True)
first = not any(marks.iterdir())
(marks / str(os.getpid())).touch()
if not first:
    time.sleep(60)
os.execv(sys.executable, [sys.executable, "-m", "flnet.runtime"])
"""


async def register(stack: Stack, name: str, *labels: str) -> str:
    spec = load_tool_spec(BEHAVE)
    spec.version.resources.required_labels.extend(labels)
    res = await stack.api.tools.CreateToolVersion(
        ts.CreateToolVersionRequest(
            parent=f"{TENANT}/tools/{name}", tool_version=await stack.api.with_source(spec)
        )
    )
    return res.tool_version.name


async def test_runs_spread_over_two_orchestrators_by_capacity_and_labels(
    tmp_path: Path,
) -> None:
    control = control_app(control_settings(tmp_path))
    await control.start("127.0.0.1:0")
    address = f"127.0.0.1:{control.port}"
    plain = await attach_orchestrator(address, tmp_path / "plain", name="plain", run_slots=2)
    gpu = await attach_orchestrator(
        address, tmp_path / "gpu", name="gpu", run_slots=2, labels={"gpu": ""}
    )
    api = clients_for(address)
    stack = Stack(api, control, plain)
    try:
        anywhere = await register(stack, "behave")
        on_gpu = await register(stack, "behave-gpu", "gpu")
        gpu_runs = [await stack.submit(on_gpu, mode="sleep", seconds=1.5) for _ in range(2)]
        runs = [await stack.submit(anywhere, mode="sleep", seconds=1.5) for _ in range(4)]
        done = [await stack.wait_state(r.name, within=120) for r in gpu_runs + runs]
        assert [d.state for d in done] == [S.RUN_STATE_FINISHED] * 6, [d.error for d in done]
        assert {d.orchestrator for d in done[:2]} == {"orchestrators/gpu"}
        placed = [d.orchestrator for d in done[2:]]
        assert placed.count("orchestrators/plain") >= 2  # the gpu one was fuller
        assert "orchestrators/gpu" in placed or placed.count("orchestrators/plain") == 4
    finally:
        await api.channel.close()
        for o in (plain, gpu):
            await o.stop()
        await control.stop(0.5)


def start_orchestrator(
    data: Path, control: str, issuer: Issuer, *args: str
) -> subprocess.Popen[bytes]:
    """`python -m flnet.orchestrator` named "doomed", 3 slots, logging to its data dir."""
    with (data / "orchestrator.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flnet.orchestrator", "--control", control, "--name",
             "doomed", "--data-dir", str(data), "--run-slots", "3", *args],
            stdout=out, stderr=out, env={**os.environ, **orchestrator_client_env(issuer)},
        )  # fmt: skip


def processes_under(folder: Path) -> list[int]:
    """Processes working in a folder under `folder` (an orchestrator's engines)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                    found.append(int(entry.name))
    return found


async def test_an_orchestrator_killed_mid_run(tmp_path: Path, http_issuer: Issuer) -> None:
    """kill -9 of an orchestrator and its engines (its host died): past its lease, the runs
    whose engine never started finish on another orchestrator; the run that was running
    ends in ERROR(LOST) naming it; no run stays in flight."""
    settings = control_settings(
        tmp_path, auth=IDENTITY.settings(issuer=http_issuer.url), orchestrator_lease=2.0
    )
    control = control_app(settings)
    await control.start("127.0.0.1:0")
    address = f"127.0.0.1:{control.port}"
    data = tmp_path / "doomed"
    data.mkdir()
    (tmp_path / "slow_engine.py").write_text(SLOW_ENGINE)
    log = data / "orchestrator.log"
    engine = f"{sys.executable} {tmp_path / 'slow_engine.py'} {tmp_path / 'marks'}"
    doomed = start_orchestrator(data, address, http_issuer, "--engine-command", engine)
    api = clients_for(address, IDENTITY.token(issuer=http_issuer.url))
    stack = Stack(api, control, None)  # type: ignore[arg-type]
    spare = None
    try:
        await wait_log_line(log, ATTACHED_LINE, 0, 60)
        version = await register(stack, "behave")
        running = await stack.submit(version, mode="sleep", seconds=120)
        await stack.wait_state(running.name, S.RUN_STATE_RUNNING)
        waiting = [await stack.submit(version, mode="finish", lines=5) for _ in range(2)]
        for w in waiting:
            async with asyncio.timeout(30):
                while (await stack.get(w.name)).orchestrator != "orchestrators/doomed":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        doomed.kill()
        doomed.wait()
        for pid in processes_under(data):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        spare = await attach_orchestrator(
            address, tmp_path / "spare", name="spare", issuer=http_issuer.url
        )
        ended = await stack.wait_state(running.name, within=60)
        assert ended.state == S.RUN_STATE_ERROR
        assert ended.error.reason == lc.ERROR_REASON_LOST
        assert "doomed" in ended.error.message
        for w in waiting:
            done = await stack.wait_state(w.name, within=120)
            assert done.state == S.RUN_STATE_FINISHED, done.error
            assert done.orchestrator == "orchestrators/spare"
            notes = [e.log.message for e in await all_events(api, w.name) if e.HasField("log")]
            assert any("orchestrator doomed was lost" in n for n in notes)
        in_flight = await control.store.runs.nonterminal_runs()
        assert in_flight == []
    finally:
        if doomed.poll() is None:
            doomed.kill()
        await api.channel.close()
        if spare is not None:
            await spare.stop()
        await control.stop(0.5)


async def test_a_control_plane_killed_with_runs_queued_loses_none_and_starts_none_twice(
    tmp_path: Path, http_issuer: Issuer
) -> None:
    data = tmp_path / "control"
    data.mkdir()
    port = free_port()
    control = start_control(data, port, http_issuer)
    address = f"127.0.0.1:{port}"
    orchestrator = None
    try:
        await wait_healthy(address)
        orchestrator = await attach_orchestrator(
            address, tmp_path / "orchestrator", issuer=http_issuer.url, run_slots=1
        )
        api = clients_for(address, IDENTITY.token(issuer=http_issuer.url))
        stack = Stack(api, None, orchestrator)  # type: ignore[arg-type]
        version = await register(stack, "behave")
        runs = [await stack.submit(version, mode="sleep", seconds=0.5) for _ in range(6)]
        await stack.wait_state(runs[0].name, S.RUN_STATE_RUNNING)
        os.kill(control.pid, signal.SIGKILL)
        control.wait()
        await api.channel.close()
        control = start_control(data, port, http_issuer)  # same address, same database
        await wait_healthy(address)
        api = clients_for(address, IDENTITY.token(issuer=http_issuer.url))
        stack = Stack(api, None, orchestrator)  # type: ignore[arg-type]
        for run in runs:
            done = await stack.wait_state(run.name, within=120)
            assert done.state == S.RUN_STATE_FINISHED, done.error
            events = await all_events(api, run.name)
            changes = [e.state_change.to_state for e in events if e.HasField("state_change")]
            assert changes.count(S.RUN_STATE_INITIALIZED) == 1, run.name  # started once
            assert sum(lifecycle.is_terminal(c) for c in changes) == 1
        await api.channel.close()
    finally:
        if orchestrator is not None:
            await orchestrator.stop()
        control.send_signal(signal.SIGTERM)
        control.wait(timeout=30)
