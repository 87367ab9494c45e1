"""Migration 0005 on a database with runs: run_inputs filled in from the runs' specs (a page
of runs at a time), every artifact's uploaded_us from its creation; and back down to 0004 and
up again, unless gc compacted a history."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import alembic.util
import pytest
from alembic import command
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.control.database import (
    alembic_config,
    create_engine,
    current_revision,
    head_revision,
    migrate,
)
from flnet.control.schema import artifacts, run_events, run_inputs, runs
from tests.postgres import database_url


def artifact(id_: str, create_us: int) -> dict[str, object]:
    return {
        "id": id_,
        "tenant": "acme",
        "direction": ap.ARTIFACT_DIRECTION_INPUT,
        "sha256": id_ * 8,
        "size_bytes": 1,
        "media_type": "text/plain",
        "filename": "f",
        "storage_uri": f"file:///{id_}",
        "create_us": create_us,
    }


def run(id_: str, *inputs: tuple[str, str]) -> dict[str, object]:
    spec = rp.Run(
        tool_version="tenants/acme/tools/noop/versions/1.0.0",
        inputs=[rp.RunInput(name=n, artifact=f"tenants/acme/artifacts/{a}") for n, a in inputs],
    )
    return {
        "id": id_,
        "tenant": "acme",
        "tool": "noop",
        "tool_version": spec.tool_version,
        "state": 1,
        "spec": spec.SerializeToString(),
        "last_sequence": 1,
        "last_batch": 0,
        "credential_sha256": id_,
        "create_us": 1,
        "update_us": 1,
    }


@pytest.fixture
def backfill_pages_of_2(monkeypatch: pytest.MonkeyPatch) -> list[ModuleType]:
    """0005 fills in run_inputs 2 runs per page. Alembic loads a migration's module anew from
    its file for every command: its page size is set on each module loaded."""
    loaded: list[ModuleType] = []
    load = alembic.util.load_python_file

    def load_0005_with_pages_of_2(*args: Any, **kwargs: Any) -> ModuleType:
        module = load(*args, **kwargs)
        if getattr(module, "revision", None) == "0005":
            vars(module)["BACKFILL_PAGE"] = 2
            loaded.append(module)
        return module

    monkeypatch.setattr(alembic.util, "load_python_file", load_0005_with_pages_of_2)
    return loaded


def downgrade_to_0004(conn: Connection) -> None:
    command.downgrade(alembic_config(conn), "0004")


async def test_0005_fills_in_run_inputs_and_upload_times(
    tmp_path: Path, backfill_pages_of_2: list[ModuleType]
) -> None:
    url = database_url(tmp_path, migrated=False)
    engine = create_engine(url)
    try:
        await migrate(engine, "0004")
        async with engine.begin() as conn:
            # Columns of 0004 only (run_inputs, uploaded_us and telemetry_dropped_us are new).
            await conn.execute(insert(artifacts), [artifact("a1", 11), artifact("a2", 22)])
            await conn.execute(
                insert(runs),
                [
                    run("r1", ("data", "a1"), ("extra", "a2")),
                    run("r2", ("data", "a1"), ("extra", "gone")),  # never existed
                    run("r3"),
                    run("r4", ("data", "a2")),
                    run("r5", ("data", "a2"), ("extra", "a1")),  # the third page
                ],
            )

        await migrate(engine)
        assert backfill_pages_of_2  # the migration that ran pages by 2

        async with engine.connect() as conn:
            bound = (await conn.execute(select(run_inputs).order_by("run_id", "name"))).all()
            uploaded = dict(
                (await conn.execute(select(artifacts.c.id, artifacts.c.uploaded_us))).all()
            )
            dropped = (await conn.execute(select(runs.c.telemetry_dropped_us))).scalars().all()
        assert [tuple(r) for r in bound] == [
            ("r1", "data", "a1"),
            ("r1", "extra", "a2"),
            ("r2", "data", "a1"),
            ("r4", "data", "a2"),
            ("r5", "data", "a2"),
            ("r5", "extra", "a1"),
        ]
        assert uploaded == {"a1": 11, "a2": 22}
        assert dropped == [None] * 5

        async with engine.begin() as conn:
            await conn.run_sync(downgrade_to_0004)
        assert await current_revision(engine) == "0004"
        await migrate(engine)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_0005_is_not_downgraded_once_gc_compacted_a_history(tmp_path: Path) -> None:
    """0004's WatchRun would wait forever for the telemetry missing from the history."""
    engine = create_engine(database_url(tmp_path, migrated=False))
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(runs), [run("r1"), run("r2")])
            await conn.execute(update(runs).where(runs.c.id == "r2").values(telemetry_dropped_us=5))

        with pytest.raises(RuntimeError, match=r"dropped the telemetry of 1 run\(s\)"):
            async with engine.begin() as conn:
                await conn.run_sync(downgrade_to_0004)

        assert await current_revision(engine) == head_revision()
        async with engine.connect() as conn:
            kept = await conn.execute(select(runs.c.id, runs.c.telemetry_dropped_us))
            assert sorted(tuple(r) for r in kept) == [("r1", None), ("r2", 5)]
    finally:
        await engine.dispose()


async def test_0005_is_not_downgraded_over_a_compaction_gc_left_unfinished(
    tmp_path: Path,
) -> None:
    """gc marks a run once its whole history is compacted: an interrupted pass leaves gaps in
    an unmarked run's history, which the downgrade finds too."""
    engine = create_engine(database_url(tmp_path, migrated=False))
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(runs), [run("r1"), run("r2")])
            await conn.execute(
                insert(run_events),
                [
                    {"run_id": "r1", "first_seq": 1, "last_seq": 3, "time_us": 1, "payload": b""},
                    {"run_id": "r2", "first_seq": 1, "last_seq": 2, "time_us": 1, "payload": b""},
                    {"run_id": "r2", "first_seq": 5, "last_seq": 5, "time_us": 1, "payload": b""},
                ],
            )
        with pytest.raises(RuntimeError, match=r"dropped the telemetry of 1 run\(s\)"):
            async with engine.begin() as conn:
                await conn.run_sync(downgrade_to_0004)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
