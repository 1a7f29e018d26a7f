"""Which spool files the ledger names: the spool sweep never removes one of them (invariant 2)."""

from __future__ import annotations

from sqlalchemy import select

from guard.ledger.ledger import Ledger
from guard.ledger.schema import instances


def named_spool_paths(ledger: Ledger, study_uid: str) -> frozenset[str]:
    """Every spool path a row of ``study_uid`` names, whatever its version or state (by the study index, not a table scan)."""
    query = select(instances.c.spool_path).where(instances.c.study_uid == study_uid, instances.c.spool_path.is_not(None))
    with ledger.read() as conn:
        return frozenset(str(path) for path in conn.execute(query).scalars())


def has_instances(ledger: Ledger) -> bool:
    """Whether the ledger holds any instance row (an empty ledger next to a full spool is a lost ledger, not a crash)."""
    with ledger.read() as conn:
        return conn.execute(select(instances.c.id).limit(1)).first() is not None
