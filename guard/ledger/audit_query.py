"""Reading the audit log back: filters by study, event and time, and seq-based pagination.

This is the query behind ``GET /audit``, ``guard audit`` and the ATNA exporter. Records come
back in ``seq`` order, oldest first, as ``AuditEntry`` values: ``at`` is an ISO 8601 UTC string
and ``detail`` the parsed JSON object; ``AuditEntry.as_dict`` is the JSON both the CLI and the
API print. Pagination is by cursor: pass the ``seq`` of
the last record seen as ``after_seq`` to get the next page; a cursor stays valid while new
records are appended, unlike an offset.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, select

from guard.ledger.ledger import Ledger
from guard.ledger.schema import audit_log

#: The most records one call returns, whatever ``limit`` asks for.
MAX_LIMIT = 10000


def _utc(value: datetime) -> datetime:
    """Times without a zone are UTC, like every time in the ledger; aware ones are converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _detail(text: str | None) -> dict[str, Any]:
    """The ``detail`` column parsed; a record whose text is not a JSON object keeps it under ``raw``."""
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"raw": text}
    return parsed if isinstance(parsed, dict) else {"raw": parsed}


@dataclass(frozen=True)
class AuditEntry:
    """One record of the audit log as read back, with its place in the hash chain.

    ``event`` and ``outcome`` are the stored strings (a record written by a newer guard may
    name an event this one does not know); ``at`` is ISO 8601 in UTC.
    """

    seq: int
    at: str
    event: str
    outcome: str
    actor: str | None
    peer_address: str | None
    patient_id: str | None
    study_uid: str | None
    series_uid: str | None
    sop_instance_uid: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values, keys in column order."""
        return asdict(self)


def _iso(value: datetime) -> str:
    """A stored time as ISO 8601; SQLite hands back naive times, which are UTC like every time in the ledger."""
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).isoformat()


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        seq=int(row.seq),
        at=_iso(row.at),
        event=row.event,
        outcome=row.outcome,
        actor=row.actor,
        peer_address=row.peer_address,
        patient_id=row.patient_id,
        study_uid=row.study_uid,
        series_uid=row.series_uid,
        sop_instance_uid=row.sop_instance_uid,
        detail=_detail(row.detail),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def query_audit(  # noqa: PLR0913 - one keyword per filter
    ledger: Ledger,
    *,
    study_uid: str | None = None,
    patient_id: str | None = None,
    event: str | None = None,
    outcome: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    after_seq: int | None = None,
) -> list[AuditEntry]:
    """Audit records matching every given filter, ordered by ``seq`` ascending.

    ``actor`` is the AE title or token identity that acted; ``since`` and ``until`` are
    inclusive bounds on the record time (naive values are UTC); ``after_seq`` keeps only
    records with a greater ``seq``; at most ``limit`` records (1 to ``MAX_LIMIT``) are
    returned. Raises ``ValueError`` for a ``limit`` out of range.
    """
    if not 1 <= limit <= MAX_LIMIT:
        msg = f"limit must be between 1 and {MAX_LIMIT}, got {limit}"
        raise ValueError(msg)
    query = select(audit_log)
    for column, value in (
        (audit_log.c.study_uid, study_uid),
        (audit_log.c.patient_id, patient_id),
        (audit_log.c.event, event),
        (audit_log.c.outcome, outcome),
        (audit_log.c.actor, actor),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(audit_log.c.at >= _utc(since))
    if until is not None:
        query = query.where(audit_log.c.at <= _utc(until))
    if after_seq is not None:
        query = query.where(audit_log.c.seq > after_seq)
    with ledger.read() as conn:
        rows = conn.execute(query.order_by(audit_log.c.seq).limit(limit)).all()
    return [_entry(row) for row in rows]


def iter_audit(ledger: Ledger, *, limit: int | None = None, page: int = 1000, **filters: Any) -> Iterator[AuditEntry]:
    """Every record matching ``filters`` (those of ``query_audit``), page by page; at most ``limit`` (None: all)."""
    after: int | None = filters.pop("after_seq", None)
    left = limit
    while left is None or left > 0:
        size = page if left is None else min(page, left)
        rows = query_audit(ledger, limit=size, after_seq=after, **filters)
        yield from rows
        if len(rows) < size:
            return
        after = rows[-1].seq
        if left is not None:
            left -= len(rows)
