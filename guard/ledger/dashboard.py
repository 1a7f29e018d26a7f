"""Ledger reads behind the status page (``GET /status``) and the ledger gauges of ``/metrics``.

Both read the whole ledger at a glance; they return plain frozen values and the admin API
turns them into its response models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, cast, extract, func, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from guard.domain.states import CLAIMABLE_STATES, AuditEvent, InstanceState
from guard.ledger.confirmations import TxnState
from guard.ledger.instances import as_utc
from guard.ledger.ledger import Ledger
from guard.ledger.schema import audit_log, commitment_transactions, instances

#: States in which an instance is received but not (or no longer) proven to be in the archive.
PENDING_STATES = (InstanceState.RECEIVED, InstanceState.FAILED, InstanceState.FORWARDED, InstanceState.MISSING)
#: States in which an instance waits to be forwarded.
QUEUE_STATES = CLAIMABLE_STATES


@dataclass(frozen=True)
class OldestPending:
    """The instance waiting longest for the archive's proof."""

    study_uid: str
    sop_instance_uid: str
    state: str
    received_at: datetime


@dataclass(frozen=True)
class DecisionFact:
    """One delete decision from the audit log."""

    seq: int
    at: datetime | None
    event: str
    outcome: str
    actor: str | None
    study_uid: str | None
    channel: str | None
    reasons: tuple[str, ...]
    sentence: str | None


@dataclass(frozen=True)
class DeadLetterFact:
    """A dead-lettered instance."""

    study_uid: str
    sop_instance_uid: str
    status: int | None
    reason: str | None
    attempts: int
    updated_at: datetime | None


@dataclass(frozen=True)
class StatusFacts:
    """What the status page shows from the ledger."""

    counts: dict[str, int]
    oldest_pending: OldestPending | None
    received_per_minute: list[int]
    confirmed_per_minute: list[int]
    recent_decisions: list[DecisionFact]
    dead_letters: list[DeadLetterFact]


@dataclass(frozen=True)
class Gauges:
    """The ledger's gauges for ``/metrics``."""

    by_state: dict[str, int]
    oldest_pending_at: datetime | None
    commitments_pending: dict[str, int]


def _minute_index(conn: Connection, column: Any, start: datetime) -> ColumnElement[int]:
    """Whole minutes from ``start`` to ``column``, computed by the database (SQLite or PostgreSQL)."""
    if conn.dialect.name == "sqlite":
        # SQLite keeps these times as naive UTC text; julianday counts days.
        start_text = start.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        return cast((func.julianday(column) - func.julianday(start_text)) * 1440, Integer)
    return cast(func.floor(extract("epoch", column - literal(start)) / 60), Integer)


def _per_minute(conn: Connection, column: Any, start: datetime, minutes: int) -> list[int]:
    index = _minute_index(conn, column, start).label("minute")
    rows = conn.execute(select(index, func.count().label("n")).where(column >= start).group_by(index)).all()
    buckets = [0] * minutes
    for minute, count in rows:
        if minute is not None and 0 <= int(minute) < minutes:
            buckets[int(minute)] += int(count)
    return buckets


def _counts(conn: Connection) -> dict[str, int]:
    return {str(state): int(n) for state, n in conn.execute(select(instances.c.state, func.count()).group_by(instances.c.state)).all()}


def _oldest_pending(conn: Connection) -> OldestPending | None:
    row = conn.execute(
        select(instances.c.study_uid, instances.c.sop_instance_uid, instances.c.state, instances.c.received_at)
        .where(instances.c.state.in_([s.value for s in PENDING_STATES]))
        .order_by(instances.c.received_at, instances.c.id)
        .limit(1)
    ).first()
    received = as_utc(row.received_at) if row is not None else None
    if row is None or received is None:
        return None
    return OldestPending(row.study_uid, row.sop_instance_uid, row.state, received)


def _detail(text: str | None) -> dict[str, Any]:
    try:
        detail = json.loads(text) if text else {}
    except ValueError:
        return {}
    return detail if isinstance(detail, dict) else {}


def _recent_decisions(conn: Connection, limit: int) -> list[DecisionFact]:
    rows = conn.execute(
        select(audit_log)
        .where(audit_log.c.event.in_([AuditEvent.DELETE_PERMITTED.value, AuditEvent.DELETE_REFUSED.value]))
        .order_by(audit_log.c.seq.desc())
        .limit(limit)
    ).all()
    facts = []
    for r in rows:
        detail = _detail(r.detail)
        reasons = tuple(str(x) for x in detail.get("reasons", []))
        facts.append(
            DecisionFact(
                r.seq, as_utc(r.at), r.event, r.outcome, r.actor, r.study_uid, detail.get("channel"), reasons, detail.get("sentence")
            )
        )
    return facts


def _dead_letters(conn: Connection, limit: int) -> list[DeadLetterFact]:
    rows = conn.execute(
        select(instances)
        .where(instances.c.state == InstanceState.DEAD_LETTERED.value)
        .order_by(instances.c.updated_at.desc(), instances.c.id.desc())
        .limit(limit)
    ).all()
    return [DeadLetterFact(r.study_uid, r.sop_instance_uid, r.last_status, r.last_error, r.attempts, as_utc(r.updated_at)) for r in rows]


def status_facts(ledger: Ledger, *, start: datetime, minutes: int, recent: int) -> StatusFacts:
    """Counts, the oldest pending instance, per-minute throughput from ``start``, recent decisions and dead letters."""
    with ledger.read() as conn:
        return StatusFacts(
            counts=_counts(conn),
            oldest_pending=_oldest_pending(conn),
            received_per_minute=_per_minute(conn, instances.c.received_at, start, minutes),
            confirmed_per_minute=_per_minute(conn, instances.c.confirmed_at, start, minutes),
            recent_decisions=_recent_decisions(conn, recent),
            dead_letters=_dead_letters(conn, recent),
        )


def gauges(ledger: Ledger) -> Gauges:
    """Instances per state, when the oldest pending one was received, and pending commitments per direction."""
    with ledger.read() as conn:
        by_state = _counts(conn)
        oldest = conn.execute(
            select(func.min(instances.c.received_at)).where(instances.c.state.in_([s.value for s in PENDING_STATES]))
        ).scalar()
        pending = {
            str(r.direction): int(r.n)
            for r in conn.execute(
                select(commitment_transactions.c.direction, func.count().label("n"))
                .where(commitment_transactions.c.state == TxnState.PENDING)
                .group_by(commitment_transactions.c.direction)
            )
        }
    return Gauges(by_state, as_utc(oldest), pending)
