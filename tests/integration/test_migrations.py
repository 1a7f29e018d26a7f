"""The schema built by the migrations is exactly the one the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from guard.ledger.db import migrate
from guard.ledger.schema import metadata


def test_migrations_build_the_declared_schema(ledger_engine: Engine) -> None:
    """Alembic finds no difference between the migrated database and ``schema.metadata``."""
    with ledger_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_migrating_twice_is_harmless(ledger_engine: Engine) -> None:
    """Running the migrations on an up-to-date ledger changes nothing (every start does it)."""
    before = sorted(inspect(ledger_engine).get_table_names())
    migrate(ledger_engine)
    assert sorted(inspect(ledger_engine).get_table_names()) == before
    assert {"studies", "series", "instances", "audit_log", "alembic_version"} <= set(before)
