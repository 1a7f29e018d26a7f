"""Statements on SQLite's own cursor (``guard.ledger.driver``) store what SQLAlchemy stores and fail as it fails.

Real SQLite files: a row written through a ``DriverStatement`` is compared, as the database holds
it, with the same row written through SQLAlchemy; driver errors come out of ``Ledger.transaction``
as the guard's ledger errors.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, bindparam, insert, select

from guard.domain.errors import LedgerRejectedError, LedgerUnavailableError
from guard.ledger.db import open_engine
from guard.ledger.driver import DriverStatement
from guard.ledger.ledger import Ledger

_metadata = MetaData()
_rows = Table(
    "rows",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, nullable=False, unique=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("maybe", String, nullable=True),
    Column("count", Integer, nullable=False, default=7),
)
_computed = Table("computed", _metadata, Column("id", Integer, primary_key=True), Column("n", Integer, default=lambda: 1))
AT = datetime(2026, 3, 1, 12, 0, 0, 300000, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """A fresh SQLite database with the test's tables, a short busy timeout."""
    made = open_engine(f"sqlite:///{tmp_path / 'driver.sqlite'}", busy_timeout_ms=200)
    _metadata.create_all(made)
    return made


def _stored(engine: Engine) -> list[tuple[object, ...]]:
    database = engine.url.database
    assert database is not None
    with sqlite3.connect(database) as raw:
        return raw.execute("SELECT name, at, maybe, count FROM rows ORDER BY id").fetchall()


def test_a_driver_row_is_stored_as_sqlalchemy_stores_it(engine: Engine) -> None:
    """Same timestamp text, same NULL, the column's default filled in: the two rows differ only in their name."""
    ledger = Ledger(engine)
    with ledger.transaction() as tx:
        tx.conn.execute(insert(_rows), {"name": "through SQLAlchemy", "at": AT, "maybe": None})
        DriverStatement(insert(_rows)).execute(tx.conn, {"name": "through the driver", "at": AT, "maybe": None})
        DriverStatement(insert(_rows)).executemany(tx.conn, [{"name": f"many {n}", "at": AT, "maybe": "x"} for n in range(2)])
    by_sqlalchemy, by_driver, *many = _stored(engine)
    assert by_driver[1:] == by_sqlalchemy[1:]
    assert [row[2:] for row in many] == [("x", 7), ("x", 7)]
    with engine.connect() as conn:
        (read_back,) = {row.at for row in conn.execute(select(_rows.c.at))}
    assert read_back.replace(tzinfo=None) == AT.replace(tzinfo=None)


def test_a_driver_query_reads_the_rows(engine: Engine) -> None:
    """A SELECT on the driver's cursor answers its first row in the statement's column order, or None."""
    ledger = Ledger(engine)
    with ledger.transaction() as tx:
        DriverStatement(insert(_rows)).execute(tx.conn, {"name": "one", "at": AT, "maybe": "m"})
        query = DriverStatement(select(_rows.c.maybe, _rows.c.name).where(_rows.c.name == bindparam("name")))
        assert query.first(tx.conn, {"name": "one"}) == ("m", "one")
        assert query.first(tx.conn, {"name": "none"}) is None


def test_a_constraint_violation_is_a_rejected_write(engine: Engine) -> None:
    """A UNIQUE violation on the driver's cursor: LedgerRejectedError, and nothing of the transaction kept."""
    ledger = Ledger(engine)
    statement = DriverStatement(insert(_rows))

    def twice() -> None:
        with ledger.transaction() as tx:
            statement.execute(tx.conn, {"name": "twice", "at": AT, "maybe": None})
            statement.execute(tx.conn, {"name": "twice", "at": AT, "maybe": None})

    with pytest.raises(LedgerRejectedError, match="UNIQUE"):
        twice()
    assert _stored(engine) == []


def test_a_driver_error_is_the_ledger_error_sqlalchemy_gives(engine: Engine) -> None:
    """A statement SQLite cannot run (its table is missing) fails the same way on the driver's cursor as through SQLAlchemy."""
    ledger = Ledger(engine)
    missing = Table("missing", MetaData(), Column("id", Integer, primary_key=True), Column("name", String))
    raised: list[tuple[type[Exception], bool]] = []
    for run in (
        lambda tx: tx.conn.execute(insert(missing), {"name": "x"}),
        lambda tx: DriverStatement(insert(missing)).execute(tx.conn, {"name": "x"}),
    ):
        try:
            with ledger.transaction() as tx:
                run(tx)
        except (LedgerRejectedError, LedgerUnavailableError) as exc:
            raised.append((type(exc), "no such table" in str(exc)))
    assert raised == [(LedgerUnavailableError, True), (LedgerUnavailableError, True)]


def test_a_computed_default_is_refused(engine: Engine) -> None:
    """A column whose default is computed per row cannot be taken once: the statement refuses to run."""
    with engine.begin() as conn, pytest.raises(TypeError, match="computed default"):
        DriverStatement(insert(_computed)).execute(conn, {"id": 1})
