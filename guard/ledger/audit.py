"""Audit records, written in the same transaction as the state change they describe.

A record is added through ``Transaction.audit`` and inserted at the end of the transaction,
just before it commits, with the next sequence number and its place in the hash chain
(``guard/ledger/chain.py``); the matching JSON line goes to the log only after the transaction
has committed, so the log never tells of something the ledger does not hold. Neither the state
change nor its record exists without the other: both commit or neither does.

Records are chained in commit order. Taking the chain head is the last thing a transaction
does, under a lock held until commit (SQLite: the ``BEGIN IMMEDIATE`` write lock; PostgreSQL:
a transaction-level advisory lock), so concurrent writers cannot fork the chain, and since no
other lock is taken after it, it cannot deadlock with the row locks of the state change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection, insert, select, text

from guard.domain.states import AuditEvent, Outcome
from guard.ledger.chain import GENESIS, record_hash
from guard.ledger.driver import DriverStatement
from guard.ledger.schema import audit_anchor, audit_log

log = structlog.get_logger("guard.audit")

Clock = Callable[[], datetime]

#: Keys the logger sets or takes itself; no record field may be logged under them.
_LOGGER_KEYS = frozenset({"event", "action", "audit", "level", "timestamp", "logger", "error", "exc_info"})


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
    node: str | None = None
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None

    def content(self) -> dict[str, Any]:
        """The record's own fields as stored (without its place in the chain)."""
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
            "node": self.node,
        }

    def chained(self, seq: int, prev_hash: str) -> AuditRecord:
        """The record placed at ``seq``, after a record whose hash is ``prev_hash``."""
        fields = {**self.content(), "seq": seq, "prev_hash": prev_hash}
        return replace(self, seq=seq, prev_hash=prev_hash, hash=record_hash(fields))

    def row(self) -> dict[str, Any]:
        """The record as a row of ``audit_log`` (once chained)."""
        return {**self.content(), "seq": self.seq, "prev_hash": self.prev_hash, "hash": self.hash}

    def log_fields(self) -> dict[str, Any]:
        """The record as keyword arguments of a log call, none of which shadows the logger's own.

        structlog takes the message as ``event``, so the record's event is left to the caller (the
        message of the line); a detail key that would shadow a record field or a logger key is
        logged as ``detail_<key>``.
        """
        skip = {"event", "detail", "at", "prev_hash"}
        fields: dict[str, Any] = {k: v for k, v in self.row().items() if v is not None and k not in skip}
        reserved = {*fields, "audit_event", *_LOGGER_KEYS}
        fields.update({f"detail_{k}" if k in reserved else k: v for k, v in self.detail.items()})
        return fields

    def emit(self) -> None:
        """Write the record as a JSON line on the log (with its sequence number and hash)."""
        log.info(self.event.value, action=self.event.value, audit=True, **self.log_fields())


# Any constant shared by every guard process on the database; "GUAR" in ASCII.
_PG_CHAIN_LOCK = 0x47554152


# Built once: every transaction that audits runs them (see ``guard.ledger.statements``).
_HEAD = select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
_ANCHOR = select(audit_anchor.c.seq, audit_anchor.c.hash)
_INSERT = insert(audit_log)
_PG_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


_HEAD_ROW = DriverStatement(_HEAD)
_INSERT_RECORDS = DriverStatement(_INSERT)


def chain_head(conn: Connection) -> tuple[int, str]:
    """The sequence number and hash of the newest record (or of the retention anchor, or genesis)."""
    # The newest record on SQLite's own cursor (``guard.ledger.driver``): every audited transaction reads it.
    head = _HEAD_ROW.first(conn)
    if head is not None:
        return int(head[0]), str(head[1])
    anchor = conn.execute(_ANCHOR).first()
    if anchor is not None:
        return int(anchor.seq), str(anchor.hash)
    return 0, GENESIS


class Transaction:
    """A ledger transaction that can also carry audit records."""

    def __init__(self, conn: Connection, clock: Clock, node: str | None = None) -> None:
        """Wrap an open connection inside ``engine.begin()``; ``node`` is written into every record and received instance."""
        self.conn = conn
        self.clock = clock
        self.node = node
        self.pending: list[AuditRecord] = []
        self.records: list[AuditRecord] = []

    def audit(self, event: AuditEvent, outcome: Outcome = Outcome.SUCCESS, **fields: Any) -> AuditRecord:
        """Add an audit record to this transaction; it is inserted when the transaction ends."""
        detail = fields.pop("detail", None) or {}
        record = AuditRecord(event=event, outcome=outcome, at=self.clock().astimezone(UTC), detail=detail, node=self.node, **fields)
        self.pending.append(record)
        return record

    def flush_audit(self) -> None:
        """Insert the pending records at the head of the chain (the last step before commit)."""
        if not self.pending:
            return
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(_PG_LOCK, {"key": _PG_CHAIN_LOCK})
        seq, prev = chain_head(self.conn)
        chained_records = []
        for record in self.pending:
            seq += 1
            chained = record.chained(seq, prev)
            chained_records.append(chained)
            prev = chained.hash or prev
        # One statement for the lot (executemany): every row has the same columns.
        _INSERT_RECORDS.executemany(self.conn, [chained.row() for chained in chained_records])
        self.records.extend(chained_records)
        self.pending.clear()
