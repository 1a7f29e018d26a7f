"""Opening the ledger database and bringing its schema up to date.

SQLite is opened in WAL mode with ``synchronous=FULL`` (a committed row survives power loss)
and a busy timeout; every transaction that may write starts with ``BEGIN IMMEDIATE`` so that
concurrent writers queue on the lock instead of failing on an upgrade from read to write, and
the threads of one process queue on a lock of their own first (``writer_lock``). A connection
of ``Ledger.read()`` begins a deferred transaction: a WAL snapshot that holds up no writer. PostgreSQL is
reached through psycopg 3.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from guard.domain.errors import LedgerRejectedError, LedgerUnavailableError
from guard.ledger.ledger import READ_ONLY, Ledger, translate

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

    from guard.config.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_on_connect(busy_timeout_ms: int) -> Any:
    """Build the connect hook that sets SQLite's durability pragmas."""

    def on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own would be DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


class _IndexHintingSQLiteCompiler(SQLiteCompiler):
    """SQLite's compiler, writing a query's table hint (``with_hint(table, "INDEXED BY ix", "sqlite")``) after the table.

    SQLAlchemy's SQLite dialect drops table hints. SQLite keeps no statistics unless ANALYZE is
    run, and without them it may choose an index that reads, and sorts, every row a query could
    match when one that reads only the rows it returns is there (``guard.ledger.schema.CLAIMABLE``).
    """

    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:  # noqa: ARG002 - the signature SQLAlchemy calls
        """The hint as written (SQLite's INDEXED BY clause follows the table name)."""
        return text


def open_engine(url: str, *, busy_timeout_ms: int = 30000) -> Engine:
    """Create the engine for ``url`` with the settings the ledger relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000})
        engine.dialect.statement_compiler = _IndexHintingSQLiteCompiler
        event.listen(engine, "connect", _sqlite_on_connect(busy_timeout_ms))

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def alembic_config(engine: Engine) -> AlembicConfig:
    """Alembic configuration bound to ``engine``, without an ini file.

    Alembic is imported here, not with the module: only the processes that migrate need it (the
    listener process opens a ledger the main process has migrated).
    """
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415 - see above

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


#: The newest migration (``migrations/versions``); a test keeps it equal to Alembic's head.
SCHEMA_REVISION = "0008"


def schema_revision(engine: Engine) -> str | None:
    """The revision the ledger's schema is at (Alembic's ``alembic_version``), or None for a ledger never migrated."""
    with engine.connect() as connection:
        conn = connection.execution_options(**{READ_ONLY: True})  # SQLite: a deferred BEGIN, no write lock
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def at_head(engine: Engine) -> bool:
    """Whether the ledger's schema is at ``SCHEMA_REVISION`` (one query, no Alembic); a ``LedgerError`` when it cannot be read."""
    try:
        return schema_revision(engine) == SCHEMA_REVISION
    except SQLAlchemyError as exc:
        raise translate(exc, "migration") from exc


def migrate(engine: Engine) -> None:
    """Bring the ledger schema to the newest revision (a database that cannot be reached is a ``LedgerUnavailableError``).

    A ledger already at ``SCHEMA_REVISION`` (every start but the first after an upgrade) is left
    as it is without loading Alembic, about 11 MB of the process's memory for as long as it runs.
    """
    if not at_head(engine):
        _upgrade(engine)


def _upgrade(engine: Engine) -> None:
    """Run Alembic's upgrade to the head revision, its failures as ledger errors."""
    from alembic import command  # noqa: PLC0415 - as in alembic_config
    from alembic.util import CommandError  # noqa: PLC0415 - idem

    try:
        command.upgrade(alembic_config(engine), "head")
    except CommandError as exc:
        msg = f"ledger migration failed: {exc} (a ledger migrated by a newer release of the guard?)"
        raise LedgerRejectedError(msg) from exc
    except SQLAlchemyError as exc:
        raise translate(exc, "migration") from exc


#: Exit code of ``python -m guard.ledger.migrate`` when the ledger cannot be reached (1: any other failure).
EXIT_UNAVAILABLE = 3


def migrate_in_child(engine: Engine) -> None:
    """Bring the ledger schema to the newest revision, in a process of its own when there is anything to do.

    For a process that runs for months (``guard serve``): Alembic, about 6 MB of resident memory
    once loaded, is then never loaded into it. A ledger at ``SCHEMA_REVISION`` is left as it is
    after one query, as ``migrate`` does. Migrated here instead: an in-memory SQLite database,
    which another process cannot open, and any ledger when this process has loaded Alembic
    already (there is nothing left to save). The child runs to the end however long the migration takes
    (an index on a large ledger): one cut short would leave the start to wait for it anyway.
    """
    if at_head(engine):
        return
    in_memory = engine.dialect.name == "sqlite" and engine.url.database in {None, "", ":memory:"}
    if in_memory or sys.modules.get("alembic") is not None:
        _upgrade(engine)  # another process cannot open it; or Alembic is here already (a process forked from one that loaded it)
        return
    # This interpreter and a module of this package; the URL on stdin, not on the command line (ps).
    result = subprocess.run(
        [sys.executable, "-m", "guard.ledger.migrate"],
        input=engine.url.render_as_string(hide_password=False),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        return
    problem = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit code {result.returncode}"
    error = LedgerUnavailableError if result.returncode == EXIT_UNAVAILABLE else LedgerRejectedError
    raise error(problem if problem.startswith("ledger ") else f"ledger migration failed: {problem}")


def attach_ledger(settings: Settings) -> Ledger:
    """The ledger named by the settings, as this node writes it (``node.id``), its schema left as it is."""
    engine = open_engine(settings.ledger_url, busy_timeout_ms=settings.ledger.busy_timeout_ms)
    return Ledger(engine, node=settings.node_id)


def open_ledger(settings: Settings, *, migrate_apart: bool = False) -> Ledger:
    """Open the ledger named by the settings and bring its schema up to date (in a child process with ``migrate_apart``)."""
    ledger = attach_ledger(settings)
    (migrate_in_child if migrate_apart else migrate)(ledger.engine)
    return ledger
