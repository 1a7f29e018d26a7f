"""The ``Ledger``: the one seam between the guard and its database.

Every statement runs inside ``Ledger.transaction()`` (writes, with audit records) or
``Ledger.read()`` (reads); both translate SQLAlchemy's exceptions into the guard's ledger
errors (``guard.domain.errors``) with ``raise ... from exc``, so no caller above the ledger
ever sees a driver exception, and whether to retry is decided by the error's type:

- ``LedgerUnavailableError``: the database cannot be reached, the connection dropped, a lock
  or the pool timed out, the disk is full (SQLite's "database or disk is full" is an
  ``OperationalError``). Transient: answer 0xA700 or 503, retry later.
- ``LedgerRejectedError``: the database refused the statement (integrity, schema, data).
  Permanent: retrying the same statement will not help.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from guard.domain.errors import LedgerError, LedgerRejectedError, LedgerUnavailableError
from guard.domain.states import AuditEvent, Outcome
from guard.ledger.audit import AuditRecord, Clock, Transaction

log = structlog.get_logger("guard.audit")


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def translate(exc: SQLAlchemyError, doing: str) -> LedgerError:
    """The ledger error for a SQLAlchemy exception raised while ``doing`` (``read``, ``write``)."""
    message = f"ledger {doing} failed: {exc.__class__.__name__}: {exc}"
    unavailable = isinstance(exc, OperationalError | DisconnectionError | PoolTimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
    return LedgerUnavailableError(message) if unavailable else LedgerRejectedError(message)


#: Execution option of a connection that only reads: on SQLite it begins a deferred transaction
#: (a WAL snapshot that neither waits for nor holds up writers) instead of ``BEGIN IMMEDIATE``.
READ_ONLY = "guard_read_only"

_writer_locks: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_writer_locks_guard = threading.Lock()


def writer_lock(engine: Engine) -> AbstractContextManager[object]:
    """The lock that this process's writers to ``engine`` take in turn (SQLite); nothing for PostgreSQL.

    SQLite has one writer at a time. A writer that finds the database locked sleeps in SQLite's
    busy handler (1, 2, 5, 10 ms and more) before it looks again, so threads of one process
    that contend for the lock wait far longer than the transaction they wait for; the C-STORE
    path, which answers the PACS only after its commit, paid that on every collision with the
    forwarding and confirmation threads. Queued on a lock of their own they take the write lock
    the moment it is free. Other processes on the same file (the listener process, a CLI
    command) still meet at SQLite's lock and its busy timeout.
    """
    if engine.dialect.name != "sqlite":
        return nullcontext()
    with _writer_locks_guard:
        lock = _writer_locks.get(engine)
        if lock is None:
            lock = _writer_locks[engine] = threading.Lock()
    return lock


class Ledger:
    """Access to the ledger database: transactions with audit, reads, and the clock."""

    def __init__(self, engine: Engine, clock: Clock = utcnow, *, node: str | None = None) -> None:
        """Use ``engine`` (already migrated) and ``clock`` for every timestamp; ``node`` names this guard node in its records."""
        self.engine = engine
        self.clock = clock
        self.node = node
        self._writer_lock = writer_lock(engine)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Run a transaction; its audit records are logged once it has committed."""
        try:
            with self._writer_lock, self.engine.begin() as conn:
                tx = Transaction(conn, self.clock, self.node)
                yield tx
                tx.flush_audit()
        except SQLAlchemyError as exc:
            raise translate(exc, "write") from exc
        for record in tx.records:
            record.emit()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading, with the same error translation as ``transaction``.

        Marked ``READ_ONLY`` so that SQLite begins it deferred (``guard.ledger.db``): a read takes
        no write lock, so the loops that look for work do not hold up a C-STORE waiting to commit.
        """
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                yield conn
        except SQLAlchemyError as exc:
            raise translate(exc, "read") from exc

    @contextmanager
    def study_lock(self, study_uid: str) -> Iterator[None]:
        """Hold a lock on ``study_uid`` shared by every node of the ledger (PostgreSQL), for decisions that must not interleave.

        A session advisory lock (``pg_advisory_lock``) on a connection of its own, held while the
        block runs; the connection closing (a node killed) frees it. SQLite serves one node, whose
        callers serialise with their own lock: nothing is taken here.
        """
        if self.engine.dialect.name != "postgresql":
            yield
            return
        key = int.from_bytes(hashlib.sha256(f"guard-study:{study_uid}".encode()).digest()[:8], "big", signed=True)
        with self.read() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()

    def reachable(self) -> bool:
        """Whether a trivial query succeeds now (for readiness; never raises a ledger error)."""
        try:
            with self.read() as conn:
                conn.execute(text("SELECT 1"))
        except LedgerError:
            return False
        return True

    def audit(self, event: AuditEvent, outcome: Outcome = Outcome.SUCCESS, **fields: Any) -> AuditRecord:
        """Record one audit event on its own (no other state change)."""
        with self.transaction() as tx:
            return tx.audit(event, outcome, **fields)

    def audit_or_log(self, event: AuditEvent, outcome: Outcome = Outcome.SUCCESS, **fields: Any) -> AuditRecord | None:
        """Record one audit event; when the ledger cannot write it, log the whole record instead.

        For refusals and alerts whose answer is already decided: a full disk or a database
        down must neither change that answer nor lose the fact, so the record goes to the log
        as an ``audit.unwritable`` line (every field of the record, none of them shadowing
        the logger's own) and None is returned.
        """
        try:
            return self.audit(event, outcome, **fields)
        except LedgerError as exc:
            detail = fields.pop("detail", None) or {}
            at = self.clock().astimezone(UTC)
            unwritten = AuditRecord(event=event, outcome=outcome, at=at, detail=detail, node=self.node, **fields)
            line = {"audit": False, "audit_event": event.value, "error": str(exc), **unwritten.log_fields()}
            log.exception("audit.unwritable", action="audit.unwritable", **line)
            return None

    def dispose(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()
