"""Reading the audit log back: filters by study, event and time, and seq-based pagination.

This is the basic query behind ``GET /audit`` (and later ``guard audit``). Records come back
in ``seq`` order, oldest first, as plain JSON-ready dictionaries: ``at`` is an ISO 8601 UTC
string and ``detail`` is the parsed JSON object. Pagination is by cursor: pass the ``seq`` of
the last record seen as ``after_seq`` to get the next page; a cursor stays valid while new
records are appended, unlike an offset.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, select

from guard.ledger.audit import Ledger
from guard.ledger.instances import as_utc
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


def _record(row: Row[Any]) -> dict[str, Any]:
    at = as_utc(row.at)
    return {
        "seq": int(row.seq),
        "at": at.isoformat() if at is not None else None,
        "event": row.event,
        "outcome": row.outcome,
        "actor": row.actor,
        "peer_address": row.peer_address,
        "patient_id": row.patient_id,
        "study_uid": row.study_uid,
        "series_uid": row.series_uid,
        "sop_instance_uid": row.sop_instance_uid,
        "detail": _detail(row.detail),
    }


def query_audit(
    ledger: Ledger,
    *,
    study_uid: str | None = None,
    event: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    after_seq: int | None = None,
) -> list[dict[str, Any]]:
    """Audit records matching every given filter, ordered by ``seq`` ascending.

    ``since`` and ``until`` are inclusive bounds on the record time (naive values are UTC);
    ``after_seq`` keeps only records with a greater ``seq``; at most ``limit`` records
    (1 to ``MAX_LIMIT``) are returned. Raises ``ValueError`` for a ``limit`` out of range.
    """
    if not 1 <= limit <= MAX_LIMIT:
        msg = f"limit must be between 1 and {MAX_LIMIT}, got {limit}"
        raise ValueError(msg)
    query = select(audit_log)
    if study_uid is not None:
        query = query.where(audit_log.c.study_uid == study_uid)
    if event is not None:
        query = query.where(audit_log.c.event == event)
    if since is not None:
        query = query.where(audit_log.c.at >= _utc(since))
    if until is not None:
        query = query.where(audit_log.c.at <= _utc(until))
    if after_seq is not None:
        query = query.where(audit_log.c.seq > after_seq)
    with ledger.engine.connect() as conn:
        rows = conn.execute(query.order_by(audit_log.c.seq).limit(limit)).all()
    return [_record(row) for row in rows]
