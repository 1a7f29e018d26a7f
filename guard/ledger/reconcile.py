"""Ledger side of ``guard reconcile``: compare what the ledger says the archive has with what it lists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update

from guard.domain.states import AuditEvent, InstanceState, Outcome
from guard.ledger.instances import back_to_forwarding, newest_versions
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


def reconcile_study(ledger: Ledger, study_uid: str, held: set[str], spool_exists: Callable[[str], bool]) -> StudyReconciliation:
    """Instances the ledger believes are in the archive but it does not list: re-queue from the spool, or alert."""
    requeued: list[str] = []
    lost: list[str] = []
    with ledger.transaction() as tx:
        rows = tx.conn.execute(
            select(instances)
            .select_from(newest_versions(instances.c.study_uid == study_uid))
            .where(instances.c.state.in_(IN_ARCHIVE_STATES)),
        ).all()
        now = tx.clock()
        for row in rows:
            if row.sop_instance_uid in held:
                continue
            subject = {"study_uid": row.study_uid, "sop_instance_uid": row.sop_instance_uid, "patient_id": row.patient_id}
            if row.spool_removed_at is None and row.spool_path and spool_exists(row.spool_path):
                back_to_forwarding(tx, row.id)
                tx.audit(
                    AuditEvent.INSTANCE_REQUEUED,
                    actor="reconcile",
                    detail={"reason": "not listed by the archive", "was": row.state},
                    **subject,
                )
                requeued.append(row.sop_instance_uid)
            else:
                tx.conn.execute(update(instances).where(instances.c.id == row.id).values(state=InstanceState.MISSING.value, updated_at=now))
                tx.audit(
                    AuditEvent.SECURITY_ALERT,
                    Outcome.FAILURE,
                    actor="reconcile",
                    detail={
                        "alert": "lost-in-archive",
                        "message": "the archive does not list it and no spool copy is left",
                        "was": row.state,
                    },
                    **subject,
                )
                lost.append(row.sop_instance_uid)
        tx.conn.execute(update(studies).where(studies.c.study_uid == study_uid).values(last_verified_at=now))
    return StudyReconciliation(checked=len(rows), requeued=requeued, lost=lost)
