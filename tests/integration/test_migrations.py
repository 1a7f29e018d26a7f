"""The schema built by the migrations is exactly the one the code declares."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from guard.ledger.db import SCHEMA_REVISION, migrate, schema_revision
from guard.ledger.instances import claimable
from guard.ledger.schema import instances, metadata
from tests.support.backlog import fill_backlog


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


def _plan(engine: Engine, query: Any) -> str:
    """The database's plan for ``query``."""
    compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            return " ".join(str(row[0]) for row in conn.execute(text(f"EXPLAIN {compiled}")))
        return " ".join(str(row[-1]) for row in conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))


def test_a_claim_reads_the_index_of_claimable_instances(ledger_engine: Engine) -> None:
    """Forwarding's claim goes through the partial index of claimable instances, not through every instance the ledger holds.

    Before it, SQLite scanned the whole table in id order for each claim of 32 once it had
    statistics, and sorted every due instance without them; PostgreSQL sorted the backlog.
    SQLite is told which index to use (it keeps no statistics unless ANALYZE runs); PostgreSQL
    chooses it from its statistics once the backlog is more than a few rows.
    """
    fill_backlog(ledger_engine, confirmed=3000, waiting=2000, node="node-a")
    for holder in ([], [instances.c.node == "node-a"]):
        plan = _plan(ledger_engine, claimable(datetime.now(UTC), 32, holder))
        assert "ix_instances_claimable" in plan, plan
        assert "Sort" not in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def test_the_schema_revision_the_code_names_is_alembics_head() -> None:
    """``SCHEMA_REVISION`` is the newest migration: a migration added without it would be skipped on every migrated ledger."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - Alembic's own view of the migrations

    from guard.ledger.db import SCHEMA_REVISION, alembic_config  # noqa: PLC0415 - idem

    assert ScriptDirectory.from_config(alembic_config(None)).get_current_head() == SCHEMA_REVISION  # type: ignore[arg-type]


def test_a_migrated_ledger_is_opened_without_loading_alembic(ledger_engine: Engine, tmp_path: Path) -> None:
    """A process that opens a ledger already at the newest revision never imports Alembic (about 11 MB it would keep)."""
    assert schema_revision(ledger_engine) == SCHEMA_REVISION
    probe = (
        "import sys\n"
        "from guard.ledger.db import migrate, open_engine\n"
        f"migrate(open_engine({ledger_engine.url.render_as_string(hide_password=False)!r}))\n"
        "print('alembic' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path)
    assert result.stdout.strip() == "False"
