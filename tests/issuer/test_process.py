"""`python -m flnet.issuer` as a process: serves on a free port, stops cleanly on SIGTERM,
keeps its keys across restarts, logs no secrets."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import aiohttp
import jwt

from flnet import timeouts
from flnet.issuer import verify_secret
from tests.privacy import umask_of


async def start(data: Path, port_file: Path) -> asyncio.subprocess.Process:
    port_file.unlink(missing_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flnet.issuer",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data),
        "--port-file",
        str(port_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        assert proc.returncode is None, await proc.stderr.read() if proc.stderr else b""
        assert time.monotonic() < deadline, "the issuer did not start"
        await asyncio.sleep(0.05)
    return proc


async def stop(proc: asyncio.subprocess.Process) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = await timeouts.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return err.decode()


async def test_serves_until_sigterm_and_keeps_its_keys(tmp_path: Path) -> None:
    data, port_file = tmp_path / "data", tmp_path / "port"
    proc = await start(data, port_file)
    assert umask_of(proc.pid) == 0o077  # what it creates without a mode is private
    base = f"http://127.0.0.1:{port_file.read_text()}"
    creds = json.loads((data / "oidc" / "dev-credentials.json").read_text())
    form = {
        "grant_type": "client_credentials",
        "client_id": "orchestrator",
        "client_secret": creds["orchestrator_client_secret"],
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/.well-known/openid-configuration") as res:
            assert (await res.json())["issuer"] == base
        async with http.post(f"{base}/token", data=form) as res:
            assert res.status == 200
            token = (await res.json())["access_token"]
        kid = jwt.get_unverified_header(token)["kid"]
        log = await stop(proc)
        assert "OIDC issuer stopped" in log
        assert token not in log
        assert creds["orchestrator_client_secret"] not in log
        assert "POST /token 200" in log  # the access log: method, path, status only

        proc = await start(data, port_file)
        base = f"http://127.0.0.1:{port_file.read_text()}"
        async with http.get(f"{base}/jwks") as res:
            assert [k["kid"] for k in (await res.json())["keys"]] == [kid]
        await stop(proc)


async def test_hash_secret_reads_stdin(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flnet.issuer",
        "--hash-secret",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate(b"s3cret\n")
    assert proc.returncode == 0
    assert verify_secret("s3cret", out.decode().strip())
