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
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import Compiled
from sqlalchemy.sql.expression import Executable

_Processor = Callable[[Any], Any] | None


class DriverStatement:
    """One statement, compiled on first use, executed on the DBAPI cursor of a SQLAlchemy connection (SQLite)."""

    def __init__(self, statement: Executable, column_keys: Sequence[str] | None = None) -> None:
        """``statement`` with, for an INSERT or UPDATE, the ``column_keys`` its parameters name."""
        self.statement = statement
        self.column_keys = list(column_keys) if column_keys is not None else None
        self._prepared: tuple[Dialect, str, Compiled, list[tuple[str, _Processor]]] | None = None
        self._defaults: dict[str, Any] = {}

    def _prepare(self, dialect: Dialect) -> tuple[str, Compiled, list[tuple[str, _Processor]]]:
        prepared = self._prepared
        if prepared is None or prepared[0] is not dialect:
            compiled = self.statement.compile(dialect=dialect, column_keys=self.column_keys)  # type: ignore[attr-defined]
            self._defaults = _scalar_defaults(compiled)
            names = compiled.positiontup or []
            order = [(name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names]
            prepared = self._prepared = (dialect, compiled.string, compiled, order)
        return prepared[1], prepared[2], prepared[3]

    def _arguments(self, compiled: Compiled, order: list[tuple[str, _Processor]], params: Mapping[str, Any]) -> list[Any]:
        values = compiled.construct_params({**self._defaults, **params})
        if values is None:  # pragma: no cover - construct_params answers a dict for a compiled statement
            msg = "no parameters for a compiled statement"
            raise TypeError(msg)
        return [value if process is None else process(value) for name, process in order for value in (values[name],)]

    def execute(self, conn: Connection, params: Mapping[str, Any] | None = None) -> sqlite3.Cursor:
        """Run with ``params`` on ``conn``'s driver connection; the cursor, for a query's rows."""
        sql, compiled, order = self._prepare(conn.dialect)
        arguments = self._arguments(compiled, order, params or {})
        cursor = _cursor(conn)
        try:
            cursor.execute(sql, arguments)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, arguments, exc, sqlite3.Error) from exc
        return cursor

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once for each of ``rows`` (all with the same keys) in one driver call."""
        sql, compiled, order = self._prepare(conn.dialect)
        arguments = [self._arguments(compiled, order, row) for row in rows]
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
