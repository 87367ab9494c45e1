"""the fleet: orchestrators attach, runs are queued and placed, tenants have quotas

Revision ID: 0007
Revises: 0006

Runs used to be launched on the one orchestrator at once. Now a run is queued until the
scheduler places it on an attached orchestrator with room for it and the labels it needs,
within its tenant's quota: the queue and the placements are columns of `runs`; the
orchestrators, the quotas and why each tenant's queue waits are tables of their own. Runs waiting for their engine when the
database is upgraded are not queued: their connect timeout ends them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

QUEUED = sa.text("queued_us IS NOT NULL")
PLACED = sa.text("orchestrator IS NOT NULL AND end_us IS NULL")


def upgrade() -> None:
    # Plain ADD COLUMN and CREATE INDEX, which SQLite does in place: batch mode's
    # copy-and-rename would drop `runs`, which run_inputs' foreign key forbids once it has rows.
    for column in (
        sa.Column("queued_us", sa.BigInteger(), nullable=True),
        sa.Column("queue_reason", sa.Text(), nullable=True),
        sa.Column("orchestrator", sa.String(63), nullable=True),
        sa.Column("assigned_us", sa.BigInteger(), nullable=True),
        sa.Column("launched_us", sa.BigInteger(), nullable=True),
        sa.Column("cpu_millis", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("required_labels", sa.Text(), nullable=False, server_default=""),
        sa.Column("stop_grace_ms", sa.BigInteger(), nullable=True),
    ):
        op.add_column("runs", column)
    op.create_index(
        "ix_runs_queued",
        "runs",
        ["tenant", "queued_us", "id"],
        sqlite_where=QUEUED,
        postgresql_where=QUEUED,
    )
    op.create_index("ix_runs_orchestrator", "runs", ["orchestrator", "state"])
    op.create_index(
        "ix_runs_placed",
        "runs",
        ["orchestrator", "tenant"],
        sqlite_where=PLACED,
        postgresql_where=PLACED,
    )
    op.create_table(
        "orchestrators",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("backend", sa.String(63), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("cpu_millis", sa.BigInteger(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("run_slots", sa.Integer(), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("session", sa.String(63), nullable=False),
        sa.Column("attach_us", sa.BigInteger(), nullable=False),
        sa.Column("seen_us", sa.BigInteger(), nullable=False),
        sa.Column("acked_sequence", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "tenant_queues",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("update_us", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("max_runs", sa.Integer(), nullable=False),
        sa.Column("max_cpu_millis", sa.BigInteger(), nullable=False),
        sa.Column("max_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("update_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_quotas")
    op.drop_table("tenant_queues")
    op.drop_table("orchestrators")
    for index in ("ix_runs_placed", "ix_runs_orchestrator", "ix_runs_queued"):
        op.drop_index(index, table_name="runs")
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later), in place like the upgrade.
    for name in (
        "stop_grace_ms", "required_labels", "memory_bytes", "cpu_millis", "launched_us",
        "assigned_us", "orchestrator", "queue_reason", "queued_us",
    ):  # fmt: skip
        op.drop_column("runs", name)
