"""Audit records, written in the same transaction as the state change they describe.

A record is inserted through ``Transaction.audit``; the matching JSON line goes to the log
only after the transaction has committed, so the log never tells of something the ledger
does not hold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, insert
from sqlalchemy.exc import SQLAlchemyError

from guard.errors import LedgerError
from guard.ledger.schema import audit_log
from guard.states import AuditEvent, Outcome

log = structlog.get_logger("guard.audit")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuditRecord:
    """One audit record: who did what, when, to which study, and what came of it."""

    event: AuditEvent
    outcome: Outcome
    at: datetime
    actor: str | None = None
    peer_address: str | None = None
    patient_id: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The record as a row of ``audit_log``."""
        return {
            "at": self.at,
            "event": self.event.value,
            "outcome": self.outcome.value,
            "actor": self.actor,
            "peer_address": self.peer_address,
            "patient_id": self.patient_id,
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "detail": json.dumps(self.detail, sort_keys=True, default=str),
        }

    def emit(self) -> None:
        """Write the record as a JSON line on the log."""
        fields = {k: v for k, v in self.row().items() if v is not None and k not in {"event", "detail", "at"}}
        log.info(self.event.value, action=self.event.value, audit=True, **fields, **self.detail)


class Transaction:
    """A ledger transaction that can also carry audit records."""

    def __init__(self, conn: Connection, clock: Clock) -> None:
        """Wrap an open connection inside ``engine.begin()``."""
        self.conn = conn
        self.clock = clock
        self.records: list[AuditRecord] = []

    def audit(self, event: AuditEvent, outcome: Outcome = Outcome.SUCCESS, **fields: Any) -> AuditRecord:
        """Insert an audit record as part of this transaction."""
        detail = fields.pop("detail", None) or {}
        record = AuditRecord(event=event, outcome=outcome, at=self.clock(), detail=detail, **fields)
        self.conn.execute(insert(audit_log).values(record.row()))
        self.records.append(record)
        return record


class Ledger:
    """Access to the ledger database: transactions with audit, and the clock."""

    def __init__(self, engine: Engine, clock: Clock = utcnow) -> None:
        """Use ``engine`` (already migrated) and ``clock`` for every timestamp."""
        self.engine = engine
        self.clock = clock

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Run a transaction; its audit records are logged once it has committed."""
        try:
            with self.engine.begin() as conn:
                tx = Transaction(conn, self.clock)
                yield tx
        except SQLAlchemyError as exc:
            msg = f"ledger write failed: {exc.__class__.__name__}: {exc}"
            raise LedgerError(msg) from exc
        for record in tx.records:
            record.emit()

    def audit(self, event: AuditEvent, outcome: Outcome = Outcome.SUCCESS, **fields: Any) -> AuditRecord:
        """Record one audit event on its own (no other state change)."""
        with self.transaction() as tx:
            return tx.audit(event, outcome, **fields)

    def dispose(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()
