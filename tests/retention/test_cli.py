"""`flnet gc` as an operator runs it: a process of its own on the configured database and
artifact store (the session's: SQLite and files, or PostgreSQL and S3)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.cli import main as cli
from flnet.cli import render
from flnet.cli.stack import free_port
from flnet.control.blobs import open_blob_store
from flnet.control.database import create_engine
from flnet.control.news import RunFeed
from flnet.control.retention import Report
from flnet.control.store import Store
from tests.postgres import database_url
from tests.s3 import artifact_environment

FLNET = [sys.executable, "-m", "flnet.cli.main"]


def flnet(data: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLNET, "--data-dir", str(data), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def gc_json(data: Path, env: dict[str, str], *args: str) -> dict[str, object]:
    done = flnet(data, env, "-o", "json", "gc", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


async def add_unused_input(env: dict[str, str], data: bytes) -> None:
    """An uploaded input, recorded as the control plane records one."""
    blobs = await open_blob_store(
        env["FLNET_ARTIFACT_URL"], s3_endpoint=env.get("FLNET_S3_ENDPOINT", "")
    )
    engine = create_engine(env["FLNET_DATABASE_URL"])
    try:
        writer = blobs.writer()
        await writer.write(data)
        blob = await writer.commit()
        await Store(engine, RunFeed()).artifacts.add_input_artifact(
            artifact_id=uuid.uuid4().hex[:20],
            tenant="default",
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            media_type="text/plain",
            filename="in.txt",
            uri=blob.uri,
        )
    finally:
        await engine.dispose()
        await blobs.close()


async def test_gc_reports_then_removes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {"FLNET_DATABASE_URL": database_url(data), **artifact_environment(data)}
    assert flnet(data, env, "db", "upgrade").returncode == 0
    await add_unused_input(env, b"nobody uses this\n")

    dry = gc_json(data, env, "--dry-run", "--grace", "0s")
    assert dry["dryRun"] is True and dry["inputs"] == {"count": 1, "bytes": 17}
    assert gc_json(data, env, "--dry-run", "--grace", "0s") == dry  # nothing changed
    shown = flnet(data, env, "gc", "--grace", "0s", "--telemetry-age", "1d")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "input artifacts no run references" in shown.stdout and "removed" in shown.stdout
    after = gc_json(data, env, "--grace", "0s", "--keep-telemetry")
    assert after["inputs"] == {"count": 0, "bytes": 0} and after["errors"] == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--grace", "2x"], "'2x' is not a duration like 90s, 30m, 24h or 7d"),
        (["--grace", "5"], "'5' is not a duration"),
        (["--grace=-1h"], "is not a duration"),
        (["--telemetry-age", "1d", "--keep-telemetry"], "not allowed with argument"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str], says: str) -> None:
    done = flnet(tmp_path, {}, "gc", *args)
    assert done.returncode == 2
    assert says in done.stderr


def test_a_database_gc_cannot_use_is_a_usage_error(tmp_path: Path) -> None:
    none = flnet(tmp_path, {"FLNET_DATABASE_URL": ""}, "gc")
    assert none.returncode == 2
    assert "no database at" in none.stderr and "flnet db upgrade" in none.stderr
    assert not (tmp_path / "flnet.db").exists()
    url = f"postgresql+asyncpg://flnet:secret-pw@127.0.0.1:{free_port()}/flnet"
    down = flnet(tmp_path, {}, "gc", "--database-url", url)
    assert down.returncode == 2
    assert "cannot reach the database" in down.stderr
    assert "secret-pw" not in down.stdout + down.stderr


def test_bytes_left_behind_make_the_exit_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async def partly(*args: object, **kwargs: object) -> Report:
        return Report(dry_run=False, errors=["blob s3://b/k: the store is unreachable"])

    monkeypatch.setattr("flnet.control.retention.run_gc", partly)
    with pytest.raises(SystemExit) as exited:
        cli.main(["--data-dir", str(tmp_path), "gc"])
    assert exited.value.code == 1
    assert "blob s3://b/k: the store is unreachable" in capsys.readouterr().err


def test_a_run_shows_when_its_telemetry_was_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    run = rp.Run(name="tenants/acme/runs/r1", state=lc.RUN_STATE_FINISHED)
    render.run_detail(run)
    assert "telemetry" not in capsys.readouterr().out
    run.telemetry_drop_time.FromSeconds(1_790_000_000)
    render.run_detail(run)
    assert "telemetry      dropped by retention 2026-" in capsys.readouterr().out
