"""The schema built by the migrations is exactly the one the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from guard.ledger.db import migrate
from guard.ledger.schema import instances, metadata


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


def test_a_commitment_report_finds_its_instances_by_index(ledger_engine: Engine) -> None:
    """The instances a report's Transaction UID names are found through an index, not by reading every instance."""
    query = select(instances.c.id).where(instances.c.commit_transaction_uid == "1.2.3")
    compiled = query.compile(ledger_engine, compile_kwargs={"literal_binds": True})
    with ledger_engine.begin() as conn:
        if ledger_engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL enable_seqscan = off"))  # an empty table would be scanned either way
            plan = " ".join(str(row[0]) for row in conn.execute(text(f"EXPLAIN {compiled}")))
        else:
            plan = " ".join(str(row[-1]) for row in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
    assert "ix_instances_commit_transaction_uid" in plan, plan
