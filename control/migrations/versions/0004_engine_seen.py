"""when each run's engine was last heard, for heartbeat leases across replicas

Revision ID: 0004
Revises: 0003

Each replica knew only the engines connected to itself, so another replica took a run whose
engine was connected elsewhere for silent. The replica an engine is connected to now records
when it last heard it, and every replica judges the lease by that.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("engine_seen_us", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("engine_seen_us")
