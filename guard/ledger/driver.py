"""Statements compiled once and, on SQLite, run on the driver's own cursor, without SQLAlchemy's per-statement work (ADR 0024).

The statements stay SQLAlchemy constructs (one source for the SQL and the types). On SQLite each
is compiled once per set of parameter names; an execution then only builds its parameters
(``Compiled.construct_params``, the columns' own bind processors, so values are stored exactly as
SQLAlchemy stores them) and hands the SQL to the sqlite3 cursor of the transaction's own
connection, inside the transaction ``Ledger.transaction`` began. A driver error is wrapped as
SQLAlchemy wraps it (``DBAPIError.instance``), so ``Ledger.transaction`` translates it into the
guard's ledger errors as it does every other. On any other database the statement simply runs
through SQLAlchemy, so callers never ask which database they are on.

Only SQLite takes the short way: its statements are calls into a library in this process, and
there SQLAlchemy's execution machinery (events, execution context, result objects) costs more
than the statements themselves. Used for the receipt's statements and the audit chain's head and
insert, it took a receipt from 0.73 to 0.78 ms of CPU down to 0.51 to 0.62 (``python -m
bench.receipt_txn``). PostgreSQL pays a round trip per statement and has its receipt in one
statement (ADR 0020).
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
    """A statement compiled for one dialect and set of parameter names: SQL, parameters in order with processors, defaults."""

    dialect: Dialect
    sql: str
    compiled: Compiled
    order: list[tuple[str, _Processor]]
    defaults: dict[str, Any]

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        """The driver's positional arguments for ``params``."""
        values = self.compiled.construct_params({**self.defaults, **params})
        if values is None:  # pragma: no cover - construct_params answers a dict for a compiled statement
            msg = "no parameters for a compiled statement"
            raise TypeError(msg)
        arguments = []
        for name, process in self.order:
            value = values[name]
            arguments.append(value if process is None else process(value))
        return arguments


class DriverStatement:
    """One statement; on SQLite executed on the DBAPI cursor of a SQLAlchemy connection, elsewhere through SQLAlchemy."""

    def __init__(self, statement: Executable) -> None:
        """``statement``; an INSERT's or UPDATE's columns are those its parameters name."""
        self.statement = statement
        # By parameter names. Entries are replaced whole, never changed in place: threads that run
        # the statement at once may each prepare it, and they all prepare the same.
        self._prepared: dict[tuple[str, ...], _Prepared] = {}

    def _prepare(self, dialect: Dialect, keys: tuple[str, ...]) -> _Prepared:
        prepared = self._prepared.get(keys)
        if prepared is None or prepared.dialect is not dialect:
            compiled = self.statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
            order = [(name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in compiled.positiontup or []]
            prepared = self._prepared[keys] = _Prepared(dialect, compiled.string, compiled, order, _scalar_defaults(compiled))
        return prepared

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The first row of a query with ``params``, as a tuple in the statement's column order; None when there is none."""
        params = params or {}
        driver = _sqlite(conn)
        if driver is None:
            row = conn.execute(self.statement, dict(params)).first()
            return None if row is None else tuple(row)
        prepared = self._prepare(conn.dialect, tuple(params))
        cursor = driver.cursor()
        try:
            _run(prepared, cursor.execute, prepared.arguments(params))
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else tuple(row)

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> None:
        """Run a statement that answers no rows with ``params``."""
        self.executemany(conn, [params])

    def executemany(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run once for each of ``rows``, one driver call for each set of parameter names."""
        driver = _sqlite(conn)
        if driver is None:
            conn.execute(self.statement, [dict(row) for row in rows])
            return
        by_keys: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
        for row in rows:
            by_keys.setdefault(tuple(row), []).append(row)
        cursor = driver.cursor()
        try:
            for keys, group in by_keys.items():
                prepared = self._prepare(conn.dialect, keys)
                arguments = [prepared.arguments(row) for row in group]
                _run(prepared, cursor.executemany, arguments)
        finally:
            cursor.close()


def _run(prepared: _Prepared, call: Callable[[str, Any], Any], arguments: Any) -> Any:
    """``call(sql, arguments)``, a driver error wrapped as SQLAlchemy wraps it."""
    try:
        return call(prepared.sql, arguments)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(prepared.sql, arguments, exc, sqlite3.Error) from exc


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


def _sqlite(conn: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under ``conn``, or None for another database."""
    if conn.dialect.name != "sqlite":
        return None
    driver = conn.connection.driver_connection
    return driver if isinstance(driver, sqlite3.Connection) else None
