"""Ledger queries for confirmation: what the archive has proven, and what goes back to forwarding.

Only two things make an instance ``confirmed``: a Storage Commitment report from the archive
naming it among the successes of a transaction the guard opened, and a C-FIND of the archive
listing it. ``archive.confirm`` decides which of the two proofs are required. A failure
report, an instance missing from a C-FIND, or two proofs that disagree send the instance
back to forwarding (bounded by ``confirm.max_resends``, then dead-letter).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update

from guard.config.settings import ConfirmMode
from guard.domain.states import AuditEvent, InstanceState, Outcome
from guard.ledger.archive_loss import FoundBy, not_in_archive, send_back
from guard.ledger.audit import Transaction
from guard.ledger.instances import as_utc, subject_of
from guard.ledger.ledger import Ledger
from guard.ledger.schema import commitment_references, commitment_transactions, instances, studies

OUTBOUND = "outbound"
INBOUND = "inbound"

Backoff = Callable[[int], timedelta]


class TxnState:
    """States of a commitment transaction (stored as these strings)."""

    PENDING = "pending"
    REPORTED = "reported"
    TIMED_OUT = "timed-out"
    FAILED = "failed"


@dataclass(frozen=True)
class Reference:
    """One instance referenced by a commitment request."""

    instance_id: int | None
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class ConfirmPolicy:
    """The parts of the configuration the confirmation queries need."""

    mode: ConfirmMode
    max_resends: int
    backoff: Backoff


def _needs_commit(mode: ConfirmMode) -> bool:
    return mode in {ConfirmMode.COMMITMENT, ConfirmMode.BOTH}


def _needs_find(mode: ConfirmMode) -> bool:
    return mode in {ConfirmMode.FIND, ConfirmMode.BOTH}


def _promote_if_proven(tx: Transaction, instance_id: int, mode: ConfirmMode) -> bool:
    """Make a forwarded instance ``confirmed`` when it has every proof ``mode`` requires."""
    # The row lock makes a second node's report or C-FIND for the same instance wait, then see it confirmed.
    row = tx.conn.execute(select(instances).where(instances.c.id == instance_id).with_for_update()).one()
    if row.state != InstanceState.FORWARDED.value:
        return False
    if (_needs_commit(mode) and row.commit_confirmed_at is None) or (_needs_find(mode) and row.find_confirmed_at is None):
        return False
    now = tx.clock()
    tx.conn.execute(
        update(instances).where(instances.c.id == instance_id).values(state=InstanceState.CONFIRMED.value, confirmed_at=now, updated_at=now)
    )
    # A confirmation is a verification: the next re-verification is due one interval from now.
    tx.conn.execute(update(studies).where(studies.c.study_uid == row.study_uid).values(last_verified_at=now))
    proofs = [name for name, at in (("commitment", row.commit_confirmed_at), ("find", row.find_confirmed_at)) if at is not None]
    tx.audit(AuditEvent.INSTANCE_CONFIRMED, detail={"proof": proofs, "mode": mode.value}, **subject_of(row))
    return True


# -- Storage Commitment towards the archive ---------------------------------------------


@dataclass(frozen=True)
class CommitmentSchedule:
    """What the forwarded instances still lacking commitment proof amount to, now.

    ``due``: the requests to send now, one per study (several for a study of more than
    ``limit``). ``next_due_at``: when the earliest of the other studies becomes due if nothing
    more of it is forwarded (None: no other study waits). ``room``: the fewest further instances
    that could fill a waiting study's request (``limit`` when none waits), so that a forwarder
    can tell when a full request may be due before ``next_due_at``.
    """

    due: list[tuple[str, list[Reference]]]
    next_due_at: datetime | None
    room: int


def _split_due(
    counts: list[tuple[str, int, datetime]], now: datetime, limit: int, quiet: timedelta
) -> tuple[dict[str, int], list[tuple[datetime, int]]]:
    """From (study, instances waiting, last forwarded): how many of each study are due now; when and how full the rest waits."""
    due_count: dict[str, int] = {}
    waiting: list[tuple[datetime, int]] = []
    for study_uid, count, last in counts:
        partial = count % limit
        if now - last >= quiet or not partial:
            due_count[study_uid] = count
            continue
        waiting.append((last + quiet, limit - partial))
        if count > partial:
            due_count[study_uid] = count - partial  # the full requests go now, the rest waits
    return due_count, waiting


def commitment_schedule(ledger: Ledger, limit: int, quiet: timedelta = timedelta(0)) -> CommitmentSchedule:
    """Forwarded instances still lacking commitment proof and not in a request, grouped by study.

    A study's group is due when it is full (``limit`` references) or when nothing of the study
    was forwarded for ``quiet``: one request per study instead of one per instance, which also
    spares the archive an association per report. The studies are counted first, and only the
    references of those due are read: a round that finds nothing due reads a row per study.
    """
    now = ledger.clock()
    waiting_proof = (
        instances.c.state == InstanceState.FORWARDED.value,
        instances.c.commit_confirmed_at.is_(None),
        instances.c.commit_transaction_uid.is_(None),
        (instances.c.confirm_next_at.is_(None)) | (instances.c.confirm_next_at <= now),
    )
    with ledger.read() as conn:
        counts = conn.execute(
            select(instances.c.study_uid, func.count(), func.max(instances.c.forwarded_at))
            .where(*waiting_proof)
            .group_by(instances.c.study_uid)
            .order_by(instances.c.study_uid),
        ).all()
        due_count, waiting = _split_due([(r[0], r[1], as_utc(r[2]) or now) for r in counts], now, limit, quiet)
        rows = (
            conn.execute(
                select(instances.c.id, instances.c.study_uid, instances.c.sop_class_uid, instances.c.sop_instance_uid)
                .where(*waiting_proof, instances.c.study_uid.in_(list(due_count)))
                .order_by(instances.c.study_uid, instances.c.id),
            ).all()
            if due_count
            else []
        )
    due: list[tuple[str, list[Reference]]] = []
    taken: dict[str, int] = {}
    for row in rows:
        if taken.get(row.study_uid, 0) >= due_count[row.study_uid]:
            continue
        taken[row.study_uid] = taken.get(row.study_uid, 0) + 1
        if not due or due[-1][0] != row.study_uid or len(due[-1][1]) >= limit:
            due.append((row.study_uid, []))
        due[-1][1].append(Reference(row.id, row.sop_class_uid, row.sop_instance_uid))
    return CommitmentSchedule(
        due=due,
        next_due_at=min((at for at, _ in waiting), default=None),
        room=min((room for _, room in waiting), default=limit),
    )


def due_for_commitment(ledger: Ledger, limit: int, quiet: timedelta = timedelta(0)) -> list[tuple[str, list[Reference]]]:
    """The requests due now (``commitment_schedule``)."""
    return commitment_schedule(ledger, limit, quiet).due


def open_outbound(ledger: Ledger, *, transaction_uid: str, archive_ae: str, study_uid: str, refs: list[Reference], timeout: float) -> None:
    """Store a commitment request and its references before it goes out (survives restarts)."""
    with ledger.transaction() as tx:
        now = tx.clock()
        deadline = now + timedelta(seconds=timeout)
        tx.conn.execute(
            insert(commitment_transactions).values(
                transaction_uid=transaction_uid,
                direction=OUTBOUND,
                peer_ae=archive_ae,
                study_uid=study_uid,
                state=TxnState.PENDING,
                created_at=now,
                deadline_at=deadline,
                next_attempt_at=deadline,
                attempts=1,
            ),
        )
        tx.conn.execute(
            insert(commitment_references),
            [
                {
                    "transaction_uid": transaction_uid,
                    "instance_id": r.instance_id,
                    "sop_class_uid": r.sop_class_uid,
                    "sop_instance_uid": r.sop_instance_uid,
                }
                for r in refs
            ],
        )
        ids = [r.instance_id for r in refs if r.instance_id is not None]
        tx.conn.execute(update(instances).where(instances.c.id.in_(ids)).values(commit_transaction_uid=transaction_uid, updated_at=now))
        tx.audit(
            AuditEvent.COMMITMENT_REQUESTED,
            actor=archive_ae,
            study_uid=study_uid,
            detail={"direction": OUTBOUND, "transaction_uid": transaction_uid, "references": len(refs)},
        )


def _release_transaction(tx: Transaction, transaction_uid: str, state: str, error: str, backoff: Backoff) -> int:
    """Close a transaction without a report; its instances may be asked about again after a backoff."""
    now = tx.clock()
    tx.conn.execute(
        update(commitment_transactions)
        .where(commitment_transactions.c.transaction_uid == transaction_uid)
        .values(state=state, completed_at=now, last_error=error),
    )
    rows = tx.conn.execute(
        select(instances.c.id, instances.c.confirm_attempts).where(instances.c.commit_transaction_uid == transaction_uid)
    ).all()
    for row in rows:
        tx.conn.execute(
            update(instances)
            .where(instances.c.id == row.id)
            .values(
                commit_transaction_uid=None,
                confirm_attempts=row.confirm_attempts + 1,
                confirm_next_at=now + backoff(row.confirm_attempts + 1),
            ),
        )
    return len(rows)


def fail_outbound(ledger: Ledger, transaction_uid: str, error: str, backoff: Backoff) -> None:
    """The N-ACTION did not go through: ask again later."""
    with ledger.transaction() as tx:
        count = _release_transaction(tx, transaction_uid, TxnState.FAILED, error, backoff)
        tx.audit(
            AuditEvent.COMMITMENT_REPORTED,
            Outcome.FAILURE,
            detail={"direction": OUTBOUND, "transaction_uid": transaction_uid, "error": error, "references": count},
        )


def expire_outbound(ledger: Ledger, backoff: Backoff) -> int:
    """Pending requests whose report never came: close them so their instances are asked about again."""
    # A read first, so that the common case (nothing expired) takes no write lock.
    with ledger.read() as conn:
        due = conn.execute(
            select(func.count()).where(
                commitment_transactions.c.direction == OUTBOUND,
                commitment_transactions.c.state == TxnState.PENDING,
                commitment_transactions.c.deadline_at < ledger.clock(),
            ),
        ).scalar_one()
    if not due:
        return 0
    with ledger.transaction() as tx:
        now = tx.clock()
        expired = tx.conn.execute(
            select(commitment_transactions.c.transaction_uid, commitment_transactions.c.peer_ae, commitment_transactions.c.study_uid).where(
                commitment_transactions.c.direction == OUTBOUND,
                commitment_transactions.c.state == TxnState.PENDING,
                commitment_transactions.c.deadline_at < now,
            ),
        ).all()
        for txn in expired:
            count = _release_transaction(tx, txn.transaction_uid, TxnState.TIMED_OUT, "no N-EVENT-REPORT before the timeout", backoff)
            tx.audit(
                AuditEvent.COMMITMENT_REPORTED,
                Outcome.FAILURE,
                actor=txn.peer_ae,
                study_uid=txn.study_uid,
                detail={"direction": OUTBOUND, "transaction_uid": txn.transaction_uid, "error": "timed out", "references": count},
            )
    return len(expired)


@dataclass(frozen=True)
class ReportResult:
    """What a commitment report from the archive amounted to."""

    known: bool
    confirmed: int = 0
    sent_back: int = 0
    ignored: int = 0
    latency_seconds: float | None = None


def apply_report(
    ledger: Ledger,
    *,
    transaction_uid: str,
    reporter_ae: str,
    peer_address: str | None,
    successes: Iterable[str],
    failures: Iterable[tuple[str, int | None]],
    policy: ConfirmPolicy,
) -> ReportResult:
    """Apply an N-EVENT-REPORT from the archive to the transaction it names.

    Only references of that transaction count; a report for a transaction the guard never
    opened (or opened towards another AE) changes nothing and raises a security alert.
    A late report (after the timeout) still counts: the archive has said it holds them.
    """
    with ledger.transaction() as tx:
        txn = tx.conn.execute(select(commitment_transactions).where(commitment_transactions.c.transaction_uid == transaction_uid)).first()
        if txn is None or txn.direction != OUTBOUND or txn.peer_ae != reporter_ae:
            tx.audit(
                AuditEvent.SECURITY_ALERT,
                Outcome.REFUSED,
                actor=reporter_ae,
                peer_address=peer_address,
                detail={"alert": "unknown-commitment-report", "transaction_uid": transaction_uid[:64]},
            )
            return ReportResult(known=False)
        refs = {
            r.sop_instance_uid: r
            for r in tx.conn.execute(select(commitment_references).where(commitment_references.c.transaction_uid == transaction_uid))
        }
        confirmed = sent_back = ignored = 0
        now = tx.clock()
        for sop_uid in successes:
            ref = refs.get(sop_uid)
            if ref is None or ref.instance_id is None:
                ignored += 1
                continue
            tx.conn.execute(update(commitment_references).where(commitment_references.c.id == ref.id).values(outcome="success"))
            tx.conn.execute(
                update(instances)
                .where(
                    instances.c.id == ref.instance_id,
                    instances.c.state == InstanceState.FORWARDED.value,
                    instances.c.commit_confirmed_at.is_(None),
                )
                .values(commit_confirmed_at=now, commit_transaction_uid=None, updated_at=now),
            )
            confirmed += int(_promote_if_proven(tx, ref.instance_id, policy.mode))
        for sop_uid, reason in failures:
            ref = refs.get(sop_uid)
            if ref is None or ref.instance_id is None:
                ignored += 1
                continue
            tx.conn.execute(
                update(commitment_references).where(commitment_references.c.id == ref.id).values(outcome="failed", failure_reason=reason)
            )
            state = tx.conn.execute(select(instances.c.state).where(instances.c.id == ref.instance_id)).scalar()
            if state == InstanceState.FORWARDED.value:
                shown = "unknown" if reason is None else f"0x{reason:04X}"
                send_back(tx, ref.instance_id, f"archive reported commitment failure {shown}", policy.max_resends)
                sent_back += 1
        tx.conn.execute(
            update(commitment_transactions)
            .where(commitment_transactions.c.transaction_uid == transaction_uid)
            .values(state=TxnState.REPORTED, completed_at=now),
        )
        tx.conn.execute(
            update(instances)
            .where(instances.c.commit_transaction_uid == transaction_uid)
            .values(commit_transaction_uid=None, confirm_next_at=now),
        )
        tx.audit(
            AuditEvent.COMMITMENT_REPORTED,
            Outcome.SUCCESS if not sent_back else Outcome.FAILURE,
            actor=reporter_ae,
            peer_address=peer_address,
            study_uid=txn.study_uid,
            detail={
                "direction": OUTBOUND,
                "transaction_uid": transaction_uid,
                "confirmed": confirmed,
                "failed": sent_back,
                "ignored": ignored,
                "late": txn.state != TxnState.PENDING,
            },
        )
    created = as_utc(txn.created_at)
    latency = (now - created).total_seconds() if created is not None else None
    return ReportResult(known=True, confirmed=confirmed, sent_back=sent_back, ignored=ignored, latency_seconds=latency)


# -- C-FIND ----------------------------------------------------------------------------


def due_for_find(ledger: Ledger, settle: timedelta) -> list[str]:
    """Studies with forwarded instances that still need C-FIND proof."""
    now = ledger.clock()
    with ledger.read() as conn:
        return list(
            conn.execute(
                select(instances.c.study_uid)
                .where(
                    instances.c.state == InstanceState.FORWARDED.value,
                    instances.c.find_confirmed_at.is_(None),
                    instances.c.forwarded_at <= now - settle,
                    (instances.c.confirm_next_at.is_(None)) | (instances.c.confirm_next_at <= now),
                )
                .distinct(),
            ).scalars(),
        )


def apply_find(
    ledger: Ledger, study_uid: str, held: set[str], policy: ConfirmPolicy, spool_exists: Callable[[str], bool] | None = None
) -> tuple[int, int]:
    """Apply a C-FIND answer for a study: listed instances gain find proof, the others are not in the archive (``not_in_archive``).

    ``spool_exists`` tells whether a spool copy is really there (None: trust the ledger's record of it).
    """
    confirmed = sent_back = 0
    with ledger.transaction() as tx:
        now = tx.clock()
        rows = tx.conn.execute(
            select(instances).where(
                instances.c.study_uid == study_uid,
                instances.c.state == InstanceState.FORWARDED.value,
                instances.c.find_confirmed_at.is_(None),
            ),
        ).all()
        for row in rows:
            if row.sop_instance_uid in held:
                tx.conn.execute(update(instances).where(instances.c.id == row.id).values(find_confirmed_at=now, updated_at=now))
                confirmed += int(_promote_if_proven(tx, row.id, policy.mode))
            else:
                copy = row.spool_removed_at is None and bool(row.spool_path) and (spool_exists is None or spool_exists(row.spool_path))
                not_in_archive(tx, row, found_by=FoundBy.FIND, has_copy=copy, max_resends=policy.max_resends)
                sent_back += 1
    return confirmed, sent_back


def postpone_find(ledger: Ledger, study_uid: str, backoff: Backoff) -> None:
    """The C-FIND failed (archive unreachable): try this study again later."""
    with ledger.transaction() as tx:
        rows = tx.conn.execute(
            select(instances.c.id, instances.c.confirm_attempts).where(
                instances.c.study_uid == study_uid,
                instances.c.state == InstanceState.FORWARDED.value,
                instances.c.find_confirmed_at.is_(None),
            ),
        ).all()
        now = tx.clock()
        for row in rows:
            tx.conn.execute(
                update(instances)
                .where(instances.c.id == row.id)
                .values(confirm_attempts=row.confirm_attempts + 1, confirm_next_at=now + backoff(row.confirm_attempts + 1)),
            )
