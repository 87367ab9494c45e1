"""indexes for listing runs by tool, tool version and state; one input artifact per content

Revision ID: 0003
Revises: 0002

ListRuns filtered by tool, tool version or state found its runs by scanning all of the tenant's,
newest first; these indexes hold them in the listing's order. An input artifact is
looked up by content before it is inserted, which PostgreSQL writers do at once: a unique
index keeps identical content in a tenant one artifact.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_tenant_tool_created', ['tenant', 'tool', 'create_us', 'id'], unique=False)
        batch_op.create_index('ix_runs_tenant_version_created', ['tenant', 'tool_version', 'create_us', 'id'], unique=False)
        batch_op.create_index('ix_runs_tenant_state_created', ['tenant', 'state', 'create_us', 'id'], unique=False)

    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.create_index('uq_artifacts_input', ['tenant', 'sha256'], unique=True, sqlite_where=sa.text('direction = 1'), postgresql_where=sa.text('direction = 1'))


def downgrade() -> None:
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_index('uq_artifacts_input', sqlite_where=sa.text('direction = 1'), postgresql_where=sa.text('direction = 1'))

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_tenant_state_created')
        batch_op.drop_index('ix_runs_tenant_version_created')
        batch_op.drop_index('ix_runs_tenant_tool_created')
