"""tool versions name the uploaded archive their source comes from

Revision ID: 0006
Revises: 0005

A source version used to name a directory on the control plane's host, which the control
plane read for any tenant. Its source is now an uploaded archive, an input artifact that
`flnet gc` must keep as long as a version names it: the foreign key says so, and the
retention query looks for it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tool_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_artifact_id", sa.String(63), nullable=True))
        batch_op.create_foreign_key(
            "fk_tool_versions_source_artifact", "artifacts", ["source_artifact_id"], ["id"]
        )
        batch_op.create_index("ix_tool_versions_source_artifact", ["source_artifact_id"])


def downgrade() -> None:
    with op.batch_alter_table("tool_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_tool_versions_source_artifact")
        batch_op.drop_constraint("fk_tool_versions_source_artifact", type_="foreignkey")
        batch_op.drop_column("source_artifact_id")
