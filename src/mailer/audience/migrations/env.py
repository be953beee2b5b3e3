"""Alembic runs migrations on the connection mailer.audience.database hands it."""

from __future__ import annotations

from alembic import context

from mailer.audience.database import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
