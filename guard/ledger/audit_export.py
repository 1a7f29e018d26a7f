"""Ledger side of audit export and retention: exporter cursors, the retention cut, and removal.

The ATNA exporter keeps one cursor per exporter name in ``audit_exports`` (the last sequence
number it handled). Retention removes the oldest records in one transaction that also moves
the chain's anchor (``audit_anchor``) to the last removed record, so the chain still verifies.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from guard.domain.states import AuditEvent
from guard.ledger.audit import chain_head
from guard.ledger.chain import GENESIS, RECORD_FIELDS, canonical_time
from guard.ledger.ledger import Ledger
from guard.ledger.schema import audit_anchor, audit_exports, audit_log

_BATCH = 5000


def export_cursor(ledger: Ledger, name: str) -> int | None:
    """The last sequence number handled by exporter ``name`` (None: it never ran)."""
    with ledger.read() as conn:
        value = conn.execute(select(audit_exports.c.last_seq).where(audit_exports.c.name == name)).scalar()
    return None if value is None else int(value)


def save_export_cursor(ledger: Ledger, name: str, seq: int) -> None:
    """Move exporter ``name``'s cursor to ``seq``."""
    with ledger.transaction() as tx:
        now = tx.clock()
        done = tx.conn.execute(update(audit_exports).where(audit_exports.c.name == name).values(last_seq=seq, updated_at=now))
        if done.rowcount == 0:
            tx.conn.execute(insert(audit_exports).values(name=name, last_seq=seq, updated_at=now))


def head_seq(ledger: Ledger) -> int:
    """The sequence number of the newest record (or of the retention anchor; 0 when there is none)."""
    with ledger.read() as conn:
        seq, _ = chain_head(conn)
    return seq


@dataclass(frozen=True)
class RetentionCut:
    """Which records a retention run removes: those after ``start`` up to ``end``, the first one linked to ``prev_hash``."""

    start: int
    end: int
    prev_hash: str


def retention_cut(ledger: Ledger, cutoff: datetime, *, limit_seq: int | None) -> RetentionCut:
    """The records older than ``cutoff`` (and not past ``limit_seq``), from the chain's anchor on."""
    with ledger.read() as conn:
        anchor = conn.execute(select(audit_anchor.c.seq, audit_anchor.c.hash)).first()
        first_new = conn.execute(select(func.min(audit_log.c.seq)).where(audit_log.c.at >= cutoff)).scalar()
        head = conn.execute(select(func.max(audit_log.c.seq))).scalar()
    start = int(anchor.seq) if anchor is not None else 0
    end = int(first_new) - 1 if first_new is not None else int(head or 0)
    if limit_seq is not None:
        end = min(end, limit_seq)
    return RetentionCut(start, end, str(anchor.hash) if anchor is not None else GENESIS)


def stored_records(ledger: Ledger, after: int, until: int) -> Iterator[dict[str, Any]]:
    """The records with ``after < seq <= until`` exactly as stored (time in canonical form), in batches."""
    while after < until:
        with ledger.read() as conn:
            rows = conn.execute(
                select(audit_log).where(audit_log.c.seq > after, audit_log.c.seq <= until).order_by(audit_log.c.seq).limit(_BATCH)
            ).all()
        if not rows:
            return
        for row in rows:
            record = {name: getattr(row, name) for name in (*RECORD_FIELDS, "hash")}
            record["at"] = canonical_time(record["at"])
            yield record
        after = int(rows[-1].seq)


def remove_exported(ledger: Ledger, *, end: int, last_hash: str, file_name: str, first_seq: int, records: int, at: datetime) -> None:
    """Remove the records up to ``end`` (saved in ``file_name`` at ``at``), move the anchor there, and audit it."""
    with ledger.transaction() as tx:
        tx.conn.execute(delete(audit_log).where(audit_log.c.seq <= end))
        values = {"seq": end, "hash": last_hash, "cut_at": at, "export_file": file_name}
        if tx.conn.execute(update(audit_anchor).where(audit_anchor.c.id == 1).values(**values)).rowcount == 0:
            tx.conn.execute(insert(audit_anchor).values(id=1, **values))
        tx.audit(
            AuditEvent.AUDIT_EXPORTED,
            detail={"file": file_name, "first_seq": first_seq, "last_seq": end, "records": records, "last_hash": last_hash},
        )
