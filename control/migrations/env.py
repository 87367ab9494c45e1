"""Alembic environment. The control plane runs migrations in-process on the connection it
hands over in `config.attributes["connection"]` (see control.database.migrate)."""

from __future__ import annotations

from alembic import context

from flnet.control.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `flnet db upgrade` (control.database.migrate)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
