"""Statements compiled once and run on SQLite's own cursor: the receipt's path without SQLAlchemy's per-statement work (ADR 0024).

The statements stay SQLAlchemy constructs (one source for the SQL and the types). Each is
compiled once for the connection's dialect; an execution then only builds its parameters
(``Compiled.construct_params``, the columns' own bind processors, so values are stored exactly as
SQLAlchemy stores them) and hands the SQL to the sqlite3 cursor of the transaction's own
connection, inside the transaction ``Ledger.transaction`` began. A driver error is wrapped as
SQLAlchemy wraps it (``DBAPIError.instance``), so ``Ledger.transaction`` translates it into the
guard's ledger errors as it does every other.

Only for SQLite, whose statements are calls into a library in this process: there SQLAlchemy's
execution machinery (events, execution context, result objects) costs more than the statements
themselves. Used for the receipt's statements and the audit chain's head and insert, it took a
receipt from 0.73 to 0.78 ms of CPU down to 0.51 to 0.62 (``python -m bench.receipt_txn``).
PostgreSQL pays a round trip per statement and has its receipt in one statement (ADR 0020).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.expression import Executable

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Prepared:
    """A statement compiled for one dialect: its SQL, the parameters in order with their processors, the constant defaults."""

    dialect: Dialect
    sql: str
    compiled: Compiled
    order: list[tuple[str, _Processor]]
    defaults: dict[str, Any]


class DriverStatement:
    """One statement, compiled on first use, executed on the DBAPI cursor of a SQLAlchemy connection (SQLite)."""

    def __init__(self, statement: Executable, column_keys: Sequence[str] | None = None) -> None:
        """``statement`` with, for an INSERT or UPDATE, the ``column_keys`` its parameters name."""
        self.statement = statement
        self.column_keys = list(column_keys) if column_keys is not None else None
        # Replaced whole, never changed in place: threads that run the statement at once may each
        # prepare it; they all prepare the same.
        self._prepared: _Prepared | None = None

    def _prepare(self, dialect: Dialect) -> _Prepared:
        prepared = self._prepared
        if prepared is None or prepared.dialect is not dialect:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.column_keys)  # type: ignore[attr-defined]
            order = [(name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in compiled.positiontup or []]
            prepared = self._prepared = _Prepared(dialect, compiled.string, compiled, order, _scalar_defaults(compiled))
        return prepared

    @staticmethod
    def _arguments(prepared: _Prepared, params: Mapping[str, Any]) -> list[Any]:
        values = prepared.compiled.construct_params({**prepared.defaults, **params})
        if values is None:  # pragma: no cover - construct_params answers a dict for a compiled statement
            msg = "no parameters for a compiled statement"
            raise TypeError(msg)
        arguments = []
        for name, process in prepared.order:
            value = values[name]
            arguments.append(value if process is None else process(value))
        return arguments

    def execute(self, conn: Connection, params: Mapping[str, Any] | None = None) -> sqlite3.Cursor:
        """Run with ``params`` on ``conn``'s driver connection; the cursor, for a query's rows."""
        prepared = self._prepare(conn.dialect)
        sql, arguments = prepared.sql, self._arguments(prepared, params or {})
        cursor = _cursor(conn)
        try:
            cursor.execute(sql, arguments)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, arguments, exc, sqlite3.Error) from exc
        return cursor

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once for each of ``rows`` (all with the same keys) in one driver call."""
        prepared = self._prepare(conn.dialect)
        sql, arguments = prepared.sql, [self._arguments(prepared, row) for row in rows]
        cursor = _cursor(conn)
        try:
            cursor.executemany(sql, arguments)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, arguments, exc, sqlite3.Error) from exc
        finally:
            cursor.close()


def _scalar_defaults(compiled: Compiled) -> dict[str, Any]:
    """The Python-side defaults of the columns an INSERT or UPDATE fills in itself (SQLAlchemy computes them per execution).

    Only constant defaults can be taken once; a column whose default is computed is refused, so
    that a schema change cannot make this path store something SQLAlchemy would not.
    """
    defaults: dict[str, Any] = {}
    for column in [*getattr(compiled, "insert_prefetch", []), *getattr(compiled, "update_prefetch", [])]:
        default = column.default if getattr(compiled, "isinsert", False) else column.onupdate
        if default is None or not default.is_scalar:
            msg = f"column {column.key} has a computed default: run this statement through SQLAlchemy"
            raise TypeError(msg)
        defaults[column.key] = default.arg
    return defaults


def _cursor(conn: Connection) -> sqlite3.Cursor:
    driver = conn.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        msg = f"a driver statement needs SQLite, not {conn.dialect.name}"
        raise TypeError(msg)
    return driver.cursor()
