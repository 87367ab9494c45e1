"""run inputs as rows, when inputs were last uploaded, whose telemetry gc dropped

Revision ID: 0005
Revises: 0004

`flnet gc` deletes input artifacts that no run references, and the telemetry of runs that
ended long ago. A run's inputs were only inside its serialized spec: each is now a row of
run_inputs, inserted with the run, whose foreign key keeps a referenced artifact from being
deleted; the rows of existing runs are filled in from their specs here. An upload of content
already stored refreshes that input's uploaded_us (so gc spares it for its grace period);
existing artifacts start at their creation. Indexes find gc's candidates, in the order gc
pages through them ((end_us, id) of runs keeping telemetry, (uploaded_us, id) of inputs), and
the artifacts recording a stored blob. Downgrading is refused once gc dropped any run's
telemetry: 0004's WatchRun waits forever for the events missing from such a history.

With these foreign keys, a later migration that rebuilds `runs` or `artifacts` on SQLite
(batch mode's copy-and-rename: create a new table, copy the rows, drop the old table, rename)
fails while foreign keys are on: dropping the old table deletes its rows first, which the
run_inputs rows referencing them refuse. `PRAGMA foreign_keys=OFF` in the migration is no
remedy: SQLite ignores it inside a transaction, and control.database.migrate runs all pending
migrations in one (open from the first data change on, an earlier step's or alembic's update
of its version). Such a migration needs migrate itself to turn foreign keys off on its SQLite
connection before that transaction begins (and on again after it ends), and to run
`PRAGMA foreign_key_check` before committing, rolling back if it reports any row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flnet.api.control.v1 import run_pb2 as rp
from flnet.control.names import ARTIFACT_RE

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Runs whose specs are read per query while filling in run_inputs.
BACKFILL_PAGE = 500


def upgrade() -> None:
    op.create_table(
        "run_inputs",
        sa.Column("run_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("artifact_id", sa.String(length=63), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_run_inputs_run"),
        sa.ForeignKeyConstraint(["artifact_id"], ["artifacts.id"], name="fk_run_inputs_artifact"),
        sa.PrimaryKeyConstraint("run_id", "name"),
    )
    with op.batch_alter_table("run_inputs", schema=None) as batch_op:
        batch_op.create_index("ix_run_inputs_artifact", ["artifact_id"], unique=False)

    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uploaded_us", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            "ix_artifacts_direction_uploaded", ["direction", "uploaded_us", "id"], unique=False
        )
        batch_op.create_index("ix_artifacts_storage_uri", ["storage_uri"], unique=False)
        batch_op.create_index("ix_artifacts_sha256", ["sha256"], unique=False)
    op.execute("UPDATE artifacts SET uploaded_us = create_us")

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("telemetry_dropped_us", sa.BigInteger(), nullable=True))
        batch_op.create_index(
            "ix_runs_telemetry_kept",
            ["end_us", "id"],
            unique=False,
            sqlite_where=sa.text("telemetry_dropped_us IS NULL"),
            postgresql_where=sa.text("telemetry_dropped_us IS NULL"),
        )

    _backfill_run_inputs(op.get_bind())


def _backfill_run_inputs(conn: sa.Connection) -> None:
    """One row per input bound in each existing run's spec, a page of runs at a time. A
    binding to an artifact that does not exist (none was ever deleted before gc) is left out
    rather than failing the upgrade."""
    runs = sa.table("runs", sa.column("id"), sa.column("spec"))
    artifacts = sa.table("artifacts", sa.column("id"))
    run_inputs = sa.table(
        "run_inputs", sa.column("run_id"), sa.column("name"), sa.column("artifact_id")
    )
    after = ""
    while True:
        page = conn.execute(
            sa.select(runs.c.id, runs.c.spec)
            .where(runs.c.id > after)
            .order_by(runs.c.id)
            .limit(BACKFILL_PAGE)
        ).all()
        if not page:
            return
        after = page[-1].id
        bindings = []
        for run in page:
            for i in rp.Run.FromString(run.spec).inputs:
                if m := ARTIFACT_RE.match(i.artifact):
                    bindings.append(
                        {"run_id": run.id, "name": i.name, "artifact_id": m["artifact"]}
                    )
        ids = {b["artifact_id"] for b in bindings}
        existing = (
            set(conn.execute(sa.select(artifacts.c.id).where(artifacts.c.id.in_(ids))).scalars())
            if ids
            else set()
        )
        rows = [b for b in bindings if b["artifact_id"] in existing]
        if rows:
            conn.execute(run_inputs.insert(), rows)


def downgrade() -> None:
    runs = sa.table("runs", sa.column("telemetry_dropped_us"))
    events = sa.table(
        "run_events", sa.column("run_id"), sa.column("first_seq"), sa.column("last_seq")
    )
    marked = sa.select(sa.func.count()).where(runs.c.telemetry_dropped_us.is_not(None))
    # A compaction gc did not finish has not marked its run yet: its history has gaps (it
    # holds fewer events than its last sequence number says).
    gapped = sa.select(events.c.run_id).group_by(events.c.run_id).having(
        sa.func.max(events.c.last_seq)
        != sa.func.sum(events.c.last_seq - events.c.first_seq + 1)
    )
    bind = op.get_bind()
    count = bind.execute(marked).scalar_one()
    count += bind.execute(sa.select(sa.func.count()).select_from(gapped.subquery())).scalar_one()
    if count:
        raise RuntimeError(
            f"cannot downgrade below 0005: `flnet gc` dropped the telemetry of {count} run(s), "
            "whose histories 0004's WatchRun cannot read to their end (it waits forever for "
            "the events dropped)"
        )
    with op.batch_alter_table("run_inputs", schema=None) as batch_op:
        batch_op.drop_index("ix_run_inputs_artifact")

    op.drop_table("run_inputs")

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_runs_telemetry_kept",
            sqlite_where=sa.text("telemetry_dropped_us IS NULL"),
            postgresql_where=sa.text("telemetry_dropped_us IS NULL"),
        )
        batch_op.drop_column("telemetry_dropped_us")

    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_index("ix_artifacts_sha256")
        batch_op.drop_index("ix_artifacts_storage_uri")
        batch_op.drop_index("ix_artifacts_direction_uploaded")
        batch_op.drop_column("uploaded_us")
