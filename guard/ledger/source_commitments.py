"""Ledger queries for Storage Commitment requested by a source (the PACS asks the guard).

The request is stored before the N-ACTION is answered, so a restart never loses it. The
answer is computed from the same facts as everything else: an instance is reported committed
only when its newest version is ``confirmed`` by the archive (invariant 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update

from guard.domain.states import AuditEvent, InstanceState, Outcome
from guard.domain.status import NO_SUCH_OBJECT_INSTANCE, PROCESSING_FAILURE
from guard.ledger.confirmations import INBOUND, TxnState
from guard.ledger.instances import as_utc, newest_versions
from guard.ledger.ledger import Ledger
from guard.ledger.schema import commitment_references, commitment_transactions, instances

# PS3.4 J.3.3.1 Failure Reasons used towards sources: 0x0112 (never received), 0x0110 (not yet confirmed).


def record_inbound(
    ledger: Ledger,
    *,
    transaction_uid: str,
    source_ae: str,
    peer_address: str,
    references: list[tuple[str, str]],
    deadline: timedelta,
) -> bool:
    """Store a source's commitment request; False if this source already sent this Transaction UID."""
    with ledger.transaction() as tx:
        existing = tx.conn.execute(
            select(commitment_transactions.c.peer_ae).where(commitment_transactions.c.transaction_uid == transaction_uid),
        ).first()
        if existing is not None:
            return False
        now = tx.clock()
        tx.conn.execute(
            insert(commitment_transactions).values(
                transaction_uid=transaction_uid,
                direction=INBOUND,
                peer_ae=source_ae,
                peer_address=peer_address,
                state=TxnState.PENDING,
                created_at=now,
                deadline_at=now + deadline,
                next_attempt_at=now,
                attempts=0,
            ),
        )
        if references:
            tx.conn.execute(
                insert(commitment_references),
                [{"transaction_uid": transaction_uid, "sop_class_uid": c, "sop_instance_uid": u} for c, u in references],
            )
        tx.audit(
            AuditEvent.COMMITMENT_REQUESTED,
            actor=source_ae,
            peer_address=peer_address,
            detail={"direction": INBOUND, "transaction_uid": transaction_uid, "references": len(references)},
        )
    return True


@dataclass(frozen=True)
class InboundVerdict:
    """What the guard can truthfully report for a source's request right now."""

    transaction_uid: str
    source_ae: str
    peer_address: str | None
    ready: bool
    successes: list[tuple[str, str]]
    failures: list[tuple[str, str, int]]
    attempts: int


def due_inbound(ledger: Ledger) -> list[str]:
    """Transaction UIDs of source requests due for a look."""
    now = ledger.clock()
    with ledger.read() as conn:
        return list(
            conn.execute(
                select(commitment_transactions.c.transaction_uid).where(
                    commitment_transactions.c.direction == INBOUND,
                    commitment_transactions.c.state == TxnState.PENDING,
                    commitment_transactions.c.next_attempt_at <= now,
                ),
            ).scalars(),
        )


def evaluate_inbound(ledger: Ledger, transaction_uid: str, *, arrival_grace: timedelta | None = None) -> InboundVerdict:
    """Success for confirmed instances, 0x0112 for never received, 0x0110 for received but unconfirmed; ready when it may be sent.

    The report is ready when every referenced instance is confirmed; or when every instance the
    guard received is confirmed and ``arrival_grace`` has passed since the request (the others
    are then taken as never coming: 0x0112); or at the deadline, whatever is still unconfirmed.
    """
    now = ledger.clock()
    with ledger.read() as conn:
        txn = conn.execute(select(commitment_transactions).where(commitment_transactions.c.transaction_uid == transaction_uid)).one()
        refs = conn.execute(select(commitment_references).where(commitment_references.c.transaction_uid == transaction_uid)).all()
        uids = [r.sop_instance_uid for r in refs]
        joined = newest_versions(instances.c.sop_instance_uid.in_(uids))
        rows = conn.execute(select(instances.c.sop_instance_uid, instances.c.state).select_from(joined))
        states = dict(rows.all())
    successes: list[tuple[str, str]] = []
    failures: list[tuple[str, str, int]] = []
    for ref in refs:
        state = states.get(ref.sop_instance_uid)
        if state == InstanceState.CONFIRMED.value:
            successes.append((ref.sop_class_uid, ref.sop_instance_uid))
        else:
            reason = NO_SUCH_OBJECT_INSTANCE if state is None else PROCESSING_FAILURE
            failures.append((ref.sop_class_uid, ref.sop_instance_uid, reason))
    deadline, created = as_utc(txn.deadline_at), as_utc(txn.created_at)
    never_received = all(reason == NO_SUCH_OBJECT_INSTANCE for _, _, reason in failures)
    grace_over = arrival_grace is not None and created is not None and now >= created + arrival_grace
    ready = not failures or (never_received and grace_over) or (deadline is not None and now >= deadline)
    return InboundVerdict(transaction_uid, txn.peer_ae, txn.peer_address, ready, successes, failures, int(txn.attempts))


def mark_inbound_reported(ledger: Ledger, verdict: InboundVerdict, peer_address: str) -> None:
    """The report was delivered."""
    with ledger.transaction() as tx:
        now = tx.clock()
        tx.conn.execute(
            update(commitment_transactions)
            .where(commitment_transactions.c.transaction_uid == verdict.transaction_uid)
            .values(state=TxnState.REPORTED, completed_at=now, attempts=verdict.attempts + 1),
        )
        for _, sop_uid, reason in verdict.failures:
            tx.conn.execute(
                update(commitment_references)
                .where(
                    commitment_references.c.transaction_uid == verdict.transaction_uid, commitment_references.c.sop_instance_uid == sop_uid
                )
                .values(outcome="failed", failure_reason=reason),
            )
        tx.conn.execute(
            update(commitment_references)
            .where(commitment_references.c.transaction_uid == verdict.transaction_uid, commitment_references.c.outcome.is_(None))
            .values(outcome="success"),
        )
        tx.audit(
            AuditEvent.COMMITMENT_REPORTED,
            Outcome.SUCCESS if not verdict.failures else Outcome.FAILURE,
            actor=verdict.source_ae,
            peer_address=peer_address,
            detail={
                "direction": INBOUND,
                "transaction_uid": verdict.transaction_uid,
                "succeeded": len(verdict.successes),
                "failed": [{"sop_instance_uid": u, "reason": f"0x{r:04X}"} for _, u, r in verdict.failures],
            },
        )


def postpone_inbound(
    ledger: Ledger, transaction_uid: str, until: datetime, *, error: str | None = None, count_attempt: bool = False
) -> None:
    """Look again at ``until``; when a delivery failed, record the error and audit it."""
    with ledger.transaction() as tx:
        txn = tx.conn.execute(select(commitment_transactions).where(commitment_transactions.c.transaction_uid == transaction_uid)).one()
        attempts = txn.attempts + (1 if count_attempt else 0)
        tx.conn.execute(
            update(commitment_transactions)
            .where(commitment_transactions.c.transaction_uid == transaction_uid)
            .values(next_attempt_at=until, attempts=attempts, last_error=error),
        )
        if error is not None:
            tx.audit(
                AuditEvent.COMMITMENT_REPORTED,
                Outcome.FAILURE,
                actor=txn.peer_ae,
                detail={
                    "direction": INBOUND,
                    "transaction_uid": transaction_uid,
                    "error": error,
                    "attempt": attempts,
                    "retry_at": until.isoformat(),
                },
            )
