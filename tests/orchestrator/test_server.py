"""The server around the service: health, reflection, `python -m flnet.orchestrator` with
a graceful stop on SIGTERM, and the limits exec wrapper on its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.api.orchestrator.v1 import orchestrator_service_pb2_grpc as pb_grpc
from flnet.channels import insecure_channel
from tests.auth.issuer import Issuer
from tests.identity import IDENTITY
from tests.orchestrator.helpers import TIMEOUT, Orchestrator, process_gone, serve_module

SERVICE = "flnet.api.orchestrator.v1.OrchestratorService"


async def test_health_is_serving(orch: Orchestrator) -> None:
    async with insecure_channel(orch.address) as channel:
        # The third-party stubs of these generated clients are incomplete.
        health: Any = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(orch: Orchestrator) -> None:
    async with insecure_channel(orch.address) as channel:
        reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names: list[str] = []
        async for response in reflection.ServerReflectionInfo(iter([request])):
            names = [s.name for s in response.list_services_response.service]
    assert SERVICE in names
    assert "grpc.health.v1.Health" in names


async def test_module_serves_until_sigterm(
    tmp_path: Path, fake_engine: list[str], http_issuer: Issuer
) -> None:
    env = {
        **os.environ,
        "FLNET_ENGINE_COMMAND": " ".join(fake_engine),
        "FLNET_OIDC_ISSUER": http_issuer.url,
    }
    process, port = await serve_module(
        "--data-dir", str(tmp_path / "data"), "--kill-grace", "1", env=env
    )
    try:
        # It serves, with the engine command from FLNET_ENGINE_COMMAND.
        tool = tmp_path / "tool"
        tool.mkdir()
        (tool / "tool.py").write_text("import time; time.sleep(600)\n")
        token = IDENTITY.orchestrator_token(issuer=http_issuer.url)
        async with insecure_channel(f"127.0.0.1:{port}", token) as channel:
            stub = pb_grpc.OrchestratorServiceStub(channel)
            launched = await stub.LaunchRun(
                pb.LaunchRunRequest(run="tenants/t/runs/r", source_path=str(tool))
            )
        engine_pid = int(launched.container.container_id)

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, stderr.decode()
    assert stdout == b""  # logs only, on stderr
    assert "orchestrator stopped" in stderr.decode()
    # The running engine was terminated (and reaped) before the orchestrator exited.
    assert process_gone(engine_pid)


def run_limits(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flnet.orchestrator.limits", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_limits_wrapper_execs_the_command_with_limits() -> None:
    probe = "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE))"
    done = run_limits("--open-files", "64", "--", sys.executable, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(64, 64)"


def test_limits_wrapper_caps_the_address_space_when_told(tmp_path: Path) -> None:
    probe = "import resource; print(resource.getrlimit(resource.RLIMIT_AS))"
    done = run_limits("--address-space-bytes", str(2**32), "--", sys.executable, "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"({2**32}, {2**32})"


def test_limits_wrapper_refuses_to_run_outside_its_cgroup(tmp_path: Path) -> None:
    done = run_limits("--cgroup", str(tmp_path / "no-such-cgroup"), "--", "true")
    assert done.returncode == 127
    assert "cannot join the run's cgroup" in done.stderr


def test_limits_wrapper_reports_what_it_cannot_execute(tmp_path: Path) -> None:
    done = run_limits("--", str(tmp_path / "missing"))
    assert done.returncode == 127
    assert "cannot execute" in done.stderr
    assert run_limits("--pids", "1").returncode == 2  # no "--"
