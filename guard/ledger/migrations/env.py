"""Alembic environment: runs migrations on the engine the caller handed over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from guard.ledger.schema import metadata

engine: Engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
