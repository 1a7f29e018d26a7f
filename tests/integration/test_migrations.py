"""The schema built by the migrations is exactly the one the code declares."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from guard.domain.errors import LedgerRejectedError
from guard.ledger.db import SCHEMA_REVISION, migrate, migrate_in_child, open_engine, schema_revision
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
    assert (
        _in_a_new_process(
            ledger_engine, tmp_path, "from guard.ledger.db import migrate\nmigrate(engine)\nprint('alembic' in sys.modules)\n"
        ).strip()
        == "False"
    )


def _in_a_new_process(ledger_engine: Engine, tmp_path: Path, body: str) -> str:
    """Run ``body`` in a new interpreter with ``engine`` open on the same ledger (no Alembic loaded); its stdout."""
    probe = (
        "import sys\n"
        "from guard.ledger.db import migrate_in_child, open_engine\n"
        f"engine = open_engine({ledger_engine.url.render_as_string(hide_password=False)!r})\n"
    ) + body
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path).stdout


def _drop_everything(engine: Engine) -> None:
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


def test_a_ledger_migrated_in_a_child_process_is_complete_and_the_parent_never_loads_alembic(ledger_engine: Engine, tmp_path: Path) -> None:
    """``guard serve``'s way (``migrate_in_child``): an empty ledger reaches the declared schema; the asking process has no Alembic."""
    _drop_everything(ledger_engine)
    assert schema_revision(ledger_engine) is None
    printed = _in_a_new_process(ledger_engine, tmp_path, "migrate_in_child(engine)\nprint('alembic' in sys.modules)\n")
    assert printed.strip() == "False"
    assert schema_revision(ledger_engine) == SCHEMA_REVISION
    with ledger_engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_a_ledger_at_a_revision_this_release_does_not_know_stops_the_start_with_the_revision_named(
    ledger_engine: Engine, tmp_path: Path
) -> None:
    """A ledger migrated by a newer release (a downgrade): a ``LedgerRejectedError`` naming the revision, from the child and in process."""
    with ledger_engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    printed = _in_a_new_process(
        ledger_engine, tmp_path, "try:\n    migrate_in_child(engine)\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    assert printed.startswith("LedgerRejectedError ledger migration failed: "), printed
    assert "'9999'" in printed
    assert "newer release" in printed
    with pytest.raises(LedgerRejectedError, match=r"ledger migration failed: .*'9999'.*newer release"):
        migrate(ledger_engine)
    assert schema_revision(ledger_engine) == "9999"


def test_an_in_memory_ledger_is_migrated_in_the_process_that_holds_it() -> None:
    """Another process cannot open an in-memory SQLite database: ``migrate_in_child`` migrates it where it is."""
    engine = open_engine("sqlite://")
    migrate_in_child(engine)
    assert schema_revision(engine) == SCHEMA_REVISION
