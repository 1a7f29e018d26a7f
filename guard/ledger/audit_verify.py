"""Checking the audit log's hash chain in the ledger (``guard audit verify`` and the start-up check)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Row, func, select

from guard.ledger.chain import GENESIS, ChainReport, check
from guard.ledger.ledger import Ledger
from guard.ledger.schema import audit_anchor, audit_log

_BATCH = 5000


def _rows(ledger: Ledger, after: int) -> Iterator[Row[Any]]:
    """Every record with ``seq > after``, in order, fetched in batches (memory stays flat)."""
    while True:
        with ledger.read() as conn:
            rows = conn.execute(select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq).limit(_BATCH)).all()
        if not rows:
            return
        yield from rows
        after = int(rows[-1].seq)


def chain_anchor(ledger: Ledger) -> tuple[int, str] | None:
    """The retention anchor (sequence number and hash of the last removed record), if records were removed."""
    with ledger.read() as conn:
        row = conn.execute(select(audit_anchor.c.seq, audit_anchor.c.hash)).first()
    return None if row is None else (int(row.seq), str(row.hash))


def count_records(ledger: Ledger) -> int:
    """How many records the ledger holds."""
    with ledger.read() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())


def verify_chain(ledger: Ledger, *, tail: int | None = None, progress: Callable[[int], None] | None = None) -> ChainReport:
    """Walk the chain from its start (the retention anchor or genesis), or only its last ``tail`` records.

    A full walk also checks that the first record follows the anchor; a tail walk trusts the
    link into its first record. ``progress`` is called with the number of records checked so far.
    """
    with ledger.read() as conn:
        anchor = conn.execute(select(audit_anchor.c.seq, audit_anchor.c.hash)).first()
        head = conn.execute(select(func.max(audit_log.c.seq))).scalar()
    if tail is not None:
        start = max(0, int(head or 0) - tail)
        expected_seq: int | None = None
        expected_prev: str | None = None
    else:
        start = int(anchor.seq) if anchor is not None else 0
        expected_seq = start + 1
        expected_prev = str(anchor.hash) if anchor is not None else GENESIS
    return check(_rows(ledger, start), expected_seq=expected_seq, expected_prev=expected_prev, progress=progress)
