"""What the guard knows of one study: the ``StudyReport`` behind ``guard status STUDY_UID`` and ``GET /studies/{uid}``.

The study's ``state`` is derived from the newest version of each of its instances, from when
the last one arrived, and from whether a permitted delete was carried out; the first rule
that applies wins (``docs/administration.md``, "What happens to a study"):

1. ``unknown``: the guard never received an instance of it.
2. ``deleted``: a permitted delete was carried out and nothing of the study arrived since.
3. ``dead-lettered``: at least one instance will not be forwarded without a person acting.
4. ``missing-in-archive``: at least one instance was confirmed, the archive no longer lists it,
   and no spool copy is left to send it again (a person must act).
5. ``confirmed``: every instance is confirmed by the archive. (Not the same as deletable: the
   delete gate also asks the source and the archive at decision time.)
6. ``receiving``: the last instance arrived less than ``quiet`` ago (``confirm.batch_wait``, the
   pause after which the guard treats the study's batch as complete): more may follow.
7. ``forwarding``: at least one instance waits to be sent to the archive (``received``, or
   ``failed`` with a retry scheduled).
8. ``confirming``: every instance was sent; the archive's proof is awaited for at least one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select

from guard.domain.states import CLAIMABLE_STATES, InstanceState
from guard.ledger.confirmations import TxnState
from guard.ledger.instances import as_utc, newest_versions
from guard.ledger.ledger import Ledger
from guard.ledger.schema import commitment_references, commitment_transactions, instances, studies


class StudyState(StrEnum):
    """Where a study stands as a whole (see the module docstring for the rules, in order)."""

    UNKNOWN = "unknown"
    DELETED = "deleted"
    DEAD_LETTERED = "dead-lettered"
    MISSING = "missing-in-archive"
    CONFIRMED = "confirmed"
    RECEIVING = "receiving"
    FORWARDING = "forwarding"
    CONFIRMING = "confirming"


def study_state(
    counts: dict[str, int], *, last_received_at: datetime | None, deleted_at: datetime | None, now: datetime, quiet: timedelta
) -> StudyState:
    """The study's state from its instances per state (newest versions), its last arrival and its delete."""
    total = sum(counts.values())
    rules = (
        (total == 0, StudyState.UNKNOWN),
        (deleted_at is not None, StudyState.DELETED),
        (counts.get(InstanceState.DEAD_LETTERED, 0) > 0, StudyState.DEAD_LETTERED),
        (counts.get(InstanceState.MISSING, 0) > 0, StudyState.MISSING),
        (counts.get(InstanceState.CONFIRMED, 0) == total, StudyState.CONFIRMED),
        (last_received_at is not None and now - last_received_at < quiet, StudyState.RECEIVING),
        (any(counts.get(s, 0) for s in CLAIMABLE_STATES), StudyState.FORWARDING),
    )
    return next((state for applies, state in rules if applies), StudyState.CONFIRMING)


@dataclass(frozen=True)
class DeadLetter:
    """An instance of the study that will not be forwarded without a person acting."""

    sop_instance_uid: str
    reason: str | None
    status: str | None
    attempts: int


@dataclass(frozen=True)
class PendingCommitment:
    """A Storage Commitment transaction of the study still waiting for its report."""

    transaction_uid: str
    direction: str
    peer_ae: str
    references: int
    created_at: str
    deadline_at: str


@dataclass(frozen=True)
class StudyReport:
    """What the guard knows of one study; ``as_dict`` is the JSON both the CLI and the API print."""

    study_uid: str
    known: bool
    state: StudyState
    instances: int
    counts: dict[str, int]
    last_received_at: str | None
    deleted_at: str | None
    dead_letters: list[DeadLetter]
    pending_commitments: list[PendingCommitment]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (the state as its string)."""
        return {**asdict(self), "state": self.state.value}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def pending_commitments(ledger: Ledger, study_uid: str | None = None) -> list[PendingCommitment]:
    """Commitment transactions still waiting (both directions), of one study or all, oldest first."""
    with ledger.read() as conn:
        query = select(commitment_transactions).where(commitment_transactions.c.state == TxnState.PENDING)
        if study_uid is not None:
            query = query.where(commitment_transactions.c.study_uid == study_uid)
        rows = conn.execute(query.order_by(commitment_transactions.c.created_at)).all()
        counts: dict[str, int] = dict(
            conn.execute(
                select(commitment_references.c.transaction_uid, func.count())
                .where(commitment_references.c.transaction_uid.in_([r.transaction_uid for r in rows]))
                .group_by(commitment_references.c.transaction_uid),
            ).all()
        )
    return [
        PendingCommitment(
            r.transaction_uid, r.direction, r.peer_ae, int(counts.get(r.transaction_uid, 0)), str(r.created_at), str(r.deadline_at)
        )
        for r in rows
    ]


def study_report(ledger: Ledger, study_uid: str, *, quiet: timedelta) -> StudyReport:
    """Read everything the report shows in one go; ``quiet`` is the pause after which a study is no longer ``receiving``."""
    joined = newest_versions(instances.c.study_uid == study_uid)
    with ledger.read() as conn:
        rows = conn.execute(
            select(
                instances.c.sop_instance_uid, instances.c.state, instances.c.last_error, instances.c.last_status, instances.c.attempts
            ).select_from(joined),
        ).all()
        study = conn.execute(select(studies.c.last_received_at, studies.c.deleted_at).where(studies.c.study_uid == study_uid)).first()
    counts: dict[str, int] = {}
    dead: list[DeadLetter] = []
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
        if r.state == InstanceState.DEAD_LETTERED.value:
            dead.append(
                DeadLetter(r.sop_instance_uid, r.last_error, None if r.last_status is None else f"0x{r.last_status:04X}", r.attempts)
            )
    last = as_utc(study.last_received_at) if study is not None else None
    deleted = as_utc(study.deleted_at) if study is not None else None
    state = study_state(counts, last_received_at=last, deleted_at=deleted, now=ledger.clock(), quiet=quiet)
    return StudyReport(
        study_uid=study_uid,
        known=bool(rows),
        state=state,
        instances=len(rows),
        counts=counts,
        last_received_at=_iso(last),
        deleted_at=_iso(deleted),
        dead_letters=dead,
        pending_commitments=pending_commitments(ledger, study_uid),
    )
