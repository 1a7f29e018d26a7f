"""Ledger side of ``guard reconcile``: compare what the ledger says the archive has with what it lists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, update

from guard.domain.states import InstanceState
from guard.ledger.archive_loss import Disposition, FoundBy, not_in_archive
from guard.ledger.instances import newest_versions
from guard.ledger.ledger import Ledger
from guard.ledger.schema import instances, studies

IN_ARCHIVE_STATES = (InstanceState.FORWARDED.value, InstanceState.CONFIRMED.value)


def select_studies(ledger: Ledger, *, since: datetime | None, until: datetime | None, batch: int = 500) -> Iterator[str]:
    """Study UIDs received in the range (all when both bounds are None), streamed in batches."""
    last = ""
    while True:
        query = select(studies.c.study_uid).where(studies.c.study_uid > last).order_by(studies.c.study_uid).limit(batch)
        if since is not None:
            query = query.where(studies.c.last_received_at >= since)
        if until is not None:
            query = query.where(studies.c.first_received_at <= until)
        with ledger.read() as conn:
            chunk = list(conn.execute(query).scalars())
        yield from chunk
        if len(chunk) < batch:
            return
        last = chunk[-1]


def count_studies(ledger: Ledger, *, since: datetime | None, until: datetime | None) -> int:
    """How many studies ``select_studies`` will yield."""
    query = select(func.count()).select_from(studies)
    if since is not None:
        query = query.where(studies.c.last_received_at >= since)
    if until is not None:
        query = query.where(studies.c.first_received_at <= until)
    with ledger.read() as conn:
        return int(conn.execute(query).scalar_one())


@dataclass(frozen=True)
class StudyReconciliation:
    """The outcome for one study."""

    checked: int
    requeued: list[str]
    lost: list[str]
    dead_lettered: list[str] = field(default_factory=list)


def reconcile_study(
    ledger: Ledger, study_uid: str, held: set[str], spool_exists: Callable[[str], bool], *, max_resends: int | None = None
) -> StudyReconciliation:
    """Instances the ledger believes are in the archive but it does not list are not in the archive (``not_in_archive``)."""
    requeued: list[str] = []
    lost: list[str] = []
    dead: list[str] = []
    with ledger.transaction() as tx:
        rows = tx.conn.execute(
            select(instances)
            .select_from(newest_versions(instances.c.study_uid == study_uid))
            .where(instances.c.state.in_(IN_ARCHIVE_STATES)),
        ).all()
        for row in rows:
            if row.sop_instance_uid in held:
                continue
            has_copy = row.spool_removed_at is None and bool(row.spool_path) and spool_exists(row.spool_path)
            outcome = not_in_archive(tx, row, found_by=FoundBy.RECONCILE, has_copy=has_copy, max_resends=max_resends)
            {Disposition.RESENT: requeued, Disposition.LOST: lost, Disposition.DEAD_LETTERED: dead}[outcome].append(row.sop_instance_uid)
        tx.conn.execute(update(studies).where(studies.c.study_uid == study_uid).values(last_verified_at=tx.clock()))
    return StudyReconciliation(checked=len(rows), requeued=requeued, lost=lost, dead_lettered=dead)
