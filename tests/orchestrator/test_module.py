"""`python -m flnet.orchestrator` as a process: it serves nothing; it dials the control plane
(the test's), presenting its client-credentials token from the issuer, registers as its
flags and environment say, carries out commands, dials again when the session ends or the
control plane is not there yet, stops gracefully on SIGTERM, and refuses bad flags."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import jwt
import pytest

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from tests.auth.issuer import Issuer
from tests.identity import IDENTITY, ORCHESTRATOR_CLIENT, orchestrator_client_env
from tests.orchestrator.hand_control import HandControl
from tests.orchestrator.helpers import TIMEOUT, process_gone, serve_module


def claims_of(authorization: str, issuer: Issuer) -> dict[str, object]:
    """The claims of a bearer token, verified as the control plane would (signature by the
    issuer's key, issuer, audience)."""
    scheme, _, token = authorization.partition(" ")
    assert scheme == "Bearer"
    claims: dict[str, object] = jwt.decode(
        token,
        IDENTITY.private.public_key(),
        algorithms=["ES256"],
        audience="flnet-orchestrator",
        issuer=issuer.url,
    )
    return claims


async def ended(process: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    """Stdout and stderr of a process once it has exited (killed if it does not)."""
    try:
        async with asyncio.timeout(TIMEOUT):
            return await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_module_attaches_runs_and_stops_on_sigterm(
    tmp_path: Path, fake_engine: list[str], http_issuer: Issuer, hand_control: HandControl
) -> None:
    env = {
        **os.environ,
        **orchestrator_client_env(http_issuer),
        "FLNET_ENGINE_COMMAND": " ".join(fake_engine),
        "FLNET_ORCHESTRATOR_LABELS": "gpu,site=eu",
    }
    process = await serve_module(
        hand_control,
        "--data-dir",
        str(tmp_path / "data"),
        "--kill-grace",
        "1",
        "--name",
        "edge-1",
        "--cpu-millis",
        "2500",
        "--memory-bytes",
        str(2**31),
        "--run-slots",
        "3",
        env=env,
    )
    try:
        # It registered as its flags and environment say, with its token from the issuer.
        [registration] = hand_control.registrations
        assert registration.name == "edge-1"
        assert registration.backend == "process"
        assert registration.capacity == sp.Capacity(
            cpu_millis=2500, memory_bytes=2**31, run_slots=3
        )
        assert dict(registration.labels) == {"gpu": "", "site": "eu"}
        assert registration.hostname == socket.gethostname()
        assert list(registration.containers) == []
        claims = claims_of(hand_control.authorizations[0], http_issuer)
        assert claims["scope"] == "orchestrator"
        assert claims["sub"] == claims["client_id"] == ORCHESTRATOR_CLIENT[0]
        assert http_issuer.hits[http_issuer.token_path] >= 1

        # It carries out a launch, with the engine command from FLNET_ENGINE_COMMAND.
        tool = tmp_path / "tool"
        tool.mkdir()
        (tool / "tool.py").write_text("import time; time.sleep(600)\n")
        launch = pb.LaunchRunRequest(run="tenants/t/runs/r", source_path=str(tool))
        result = await hand_control.command(sp.FleetCommand(launch=launch), TIMEOUT)
        assert result.code == 0, result.message
        launched = result.container
        assert launched.state == pb.CONTAINER_STATE_RUNNING
        engine_pid = int(launched.container_id)

        # A session that ends is dialled again: the registration lists the engine.
        hand_control.drop()
        await hand_control.wait_registrations(2, TIMEOUT)
        again = hand_control.registrations[1]
        assert [(c.run, c.container_id, c.state) for c in again.containers] == [
            (launched.run, launched.container_id, pb.CONTAINER_STATE_RUNNING)
        ]
        assert claims_of(hand_control.authorizations[1], http_issuer)["scope"] == "orchestrator"

        process.send_signal(signal.SIGTERM)
        stdout, stderr = await ended(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, stderr.decode()
    assert stdout == b""  # logs only, on stderr
    assert "orchestrator stopped" in stderr.decode()
    # It detached (the control plane saw its session end)...
    await hand_control.wait_until(lambda: hand_control.sessions_ended == 2, TIMEOUT)
    # ...and terminated (and reaped) the running engine before exiting.
    assert process_gone(engine_pid)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_module_dials_until_the_control_plane_is_there(
    tmp_path: Path, http_issuer: Issuer
) -> None:
    control = HandControl()
    control.port = free_port()  # nothing listens there yet
    env = {**os.environ, **orchestrator_client_env(http_issuer)}
    serving = asyncio.create_task(
        serve_module(control, "--data-dir", str(tmp_path / "data"), "--name", "late", env=env)
    )
    try:
        await asyncio.sleep(1.0)  # it dials, and dials again
        assert not serving.done()
        await control.start(control.port)
        process = await serving
        stderr = b""
        try:
            assert [r.name for r in control.registrations] == ["late"]
            process.send_signal(signal.SIGTERM)
            _, stderr = await ended(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    finally:
        serving.cancel()
        await control.stop()

    assert process.returncode == 0, stderr.decode()
    assert "session with the control plane ended: UNAVAILABLE" in stderr.decode()


async def test_the_module_stops_on_sigterm_while_no_control_plane_answers(
    tmp_path: Path, http_issuer: Issuer
) -> None:
    env = {**os.environ, **orchestrator_client_env(http_issuer)}
    process = await asyncio.create_subprocess_exec(
        *module_command(tmp_path, "--control", f"127.0.0.1:{free_port()}"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    await asyncio.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = await ended(process)

    assert process.returncode == 0, stderr.decode()
    assert stdout == b""
    assert "orchestrator stopped" in stderr.decode()


def module_command(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "flnet.orchestrator", "--data-dir", str(tmp_path / "d"), *args]


CLIENT = {
    "FLNET_OIDC_ISSUER": "http://127.0.0.1:1",
    "FLNET_ORCHESTRATOR_CLIENT_ID": "orchestrator",
    "FLNET_ORCHESTRATOR_CLIENT_SECRET": "secret",
}


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        (["--run-slots", "0"], CLIENT, "--run-slots must be at least 1"),
        (["--labels", "gpu,Site=eu"], CLIENT, "--labels: label 'Site=eu': keys and values"),
        (["--name", "Edge_1"], CLIENT, "--name: 1 to 63 lower-case letters"),
        ([], {}, "the orchestrator needs its client at the OIDC issuer"),
        (
            [],
            {k: v for k, v in CLIENT.items() if k != "FLNET_ORCHESTRATOR_CLIENT_SECRET"},
            "FLNET_ORCHESTRATOR_CLIENT_SECRET(_FILE)",
        ),
    ],
)
def test_the_module_refuses_bad_settings(
    tmp_path: Path, args: list[str], environ: Mapping[str, str], message: str
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLNET_OIDC_", "FLNET_ORCHESTRATOR_"))
    }
    done = subprocess.run(
        module_command(tmp_path, *args),
        env={**env, **environ},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert message in done.stderr
    assert "usage: python -m flnet.orchestrator" in done.stderr
    assert not (tmp_path / "d").exists()  # nothing started
