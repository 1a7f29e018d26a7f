"""Ledger queries for what happens after confirmation: re-verification and spool retention."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, or_, select, update

from guard.domain.states import AuditEvent, InstanceState
from guard.ledger.archive_loss import FoundBy, not_in_archive
from guard.ledger.instances import subject_of
from guard.ledger.ledger import Ledger
from guard.ledger.schema import instances, studies


def due_for_reverification(ledger: Ledger, interval: timedelta, limit: int = 20) -> list[str]:
    """Studies with confirmed instances not verified within ``interval``, oldest first."""
    now = ledger.clock()
    with ledger.read() as conn:
        confirmed = select(instances.c.study_uid).where(instances.c.state == InstanceState.CONFIRMED.value).distinct().subquery()
        return list(
            conn.execute(
                select(studies.c.study_uid)
                .join(confirmed, confirmed.c.study_uid == studies.c.study_uid)
                .where((studies.c.last_verified_at.is_(None)) | (studies.c.last_verified_at < now - interval))
                .order_by(studies.c.last_verified_at.is_not(None), studies.c.last_verified_at)
                .limit(limit),
            ).scalars(),
        )


@dataclass(frozen=True)
class Missing:
    """A confirmed instance the archive no longer lists."""

    instance_id: int
    sop_instance_uid: str
    spool_path: str | None


def apply_reverification(
    ledger: Ledger, study_uid: str, held: set[str], spool_exists: Callable[[str], bool], *, max_resends: int | None = None
) -> list[Missing]:
    """Confirmed instances the archive no longer lists are not in the archive (``not_in_archive``): re-sent or alerted.

    ``max_resends`` bounds the re-sends of one instance before it is dead-lettered (None: no bound).
    """
    lost: list[Missing] = []
    with ledger.transaction() as tx:
        rows = tx.conn.execute(
            select(instances).where(instances.c.study_uid == study_uid, instances.c.state == InstanceState.CONFIRMED.value),
        ).all()
        for row in rows:
            if row.sop_instance_uid in held:
                continue
            has_copy = row.spool_removed_at is None and row.spool_path is not None and spool_exists(row.spool_path)
            lost.append(Missing(row.id, row.sop_instance_uid, row.spool_path if has_copy else None))
            not_in_archive(tx, row, found_by=FoundBy.REVERIFY, has_copy=has_copy, max_resends=max_resends)
        tx.conn.execute(update(studies).where(studies.c.study_uid == study_uid).values(last_verified_at=tx.clock()))
    return lost


def removable_spool_copies(ledger: Ledger, grace: timedelta, limit: int = 500, *, held_by: str | None = None) -> list[tuple[int, str]]:
    """Spool copies that may go: confirmed longer than ``grace`` ago (invariant 2), or superseded by such a version.

    ``held_by`` (a node-local spool): only the copies that node received (or rows from before nodes existed).
    """
    now = ledger.clock()
    newer = instances.alias("newer")
    holder = [] if held_by is None else [or_(instances.c.node == held_by, instances.c.node.is_(None))]
    with ledger.read() as conn:
        confirmed = conn.execute(
            select(instances.c.id, instances.c.spool_path)
            .where(
                instances.c.state == InstanceState.CONFIRMED.value,
                instances.c.confirmed_at <= now - grace,
                instances.c.spool_removed_at.is_(None),
                *holder,
            )
            .limit(limit),
        ).all()
        superseded = conn.execute(
            select(instances.c.id, instances.c.spool_path)
            .join(newer, and_(newer.c.sop_instance_uid == instances.c.sop_instance_uid, newer.c.version > instances.c.version))
            .where(
                instances.c.state == InstanceState.SUPERSEDED.value,
                instances.c.spool_removed_at.is_(None),
                newer.c.state == InstanceState.CONFIRMED.value,
                newer.c.confirmed_at <= now - grace,
                *holder,
            )
            .limit(limit),
        ).all()
    return [(r.id, r.spool_path) for r in [*confirmed, *superseded] if r.spool_path]


def remove_spool_copy(ledger: Ledger, instance_id: int, remove: Callable[[], None]) -> bool:
    """Record that the spool copy is gone and ``remove`` it, in one transaction (only for confirmed or superseded instances).

    ``remove`` runs inside the transaction, after the state check: with a ``FencedLedger`` the
    file is never removed by a node that lost the spool clean-up lease. An ``OSError`` from
    ``remove`` rolls the record back and is raised.
    """
    with ledger.transaction() as tx:
        now = tx.clock()
        result = tx.conn.execute(
            update(instances)
            .where(instances.c.id == instance_id, instances.c.state.in_([InstanceState.CONFIRMED.value, InstanceState.SUPERSEDED.value]))
            .values(spool_removed_at=now),
        )
        if not result.rowcount:
            return False
        row = tx.conn.execute(select(instances).where(instances.c.id == instance_id)).one()
        tx.audit(AuditEvent.INSTANCE_SPOOL_REMOVED, detail={"state": row.state, "path": row.spool_path}, **subject_of(row))
        remove()
    return True


def spool_holder(ledger: Ledger, spool_path: str) -> str | None:
    """The node that received the instance stored at ``spool_path`` (None: unknown, or from before nodes existed)."""
    with ledger.read() as conn:
        return conn.execute(select(instances.c.node).where(instances.c.spool_path == spool_path).limit(1)).scalar()


def mark_spool_removed(ledger: Ledger, instance_id: int) -> None:
    """Record that the spool copy is gone (only for confirmed or superseded instances)."""
    remove_spool_copy(ledger, instance_id, lambda: None)
