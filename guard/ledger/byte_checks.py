"""Ledger queries for proof of bytes: which instances are due for a byte check, and what each check found.

Every check of an instance is a row of ``byte_checks`` (when, found by which policy, by which
retrieve, compared how, the result, both digests); the instance keeps its last result
(``bytes_result``, ``bytes_checked_at``) and when the rolling re-verification checks it again
(``bytes_due_at``). A check that did not match is evidence against the archive's copy and goes
through the one rule of ``guard.ledger.archive_loss`` (``bytes_differ``): re-sent from the spool,
or flagged when no copy is left. An instance whose last check did not match keeps refusing
deletes (``bytes-differ``) until a later check matches; it is checked again as soon as it is
confirmed again, whatever ``verify.at_confirmation`` says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, insert, select, update

from guard.domain.sampling import spread
from guard.domain.states import AuditEvent, ByteResult, InstanceState, Outcome
from guard.ledger.archive_loss import Disposition, FoundBy, bytes_differ
from guard.ledger.instances import as_utc, newest_versions
from guard.ledger.ledger import Ledger
from guard.ledger.schema import byte_checks, instances

#: Results that count against the copy (refuse deletes, check again at the next confirmation).
FLAGGED = (ByteResult.DIFFER.value, ByteResult.ABSENT.value, ByteResult.UNVERIFIABLE.value)


@dataclass(frozen=True)
class CheckTarget:
    """An instance to retrieve from the archive and compare."""

    instance_id: int
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    sop_class_uid: str
    transfer_syntax: str
    sha256: str
    content_sha256: str | None
    spool_path: str | None
    flagged: bool

    @classmethod
    def of(cls, row: Row[Any]) -> CheckTarget:
        """The target for an ``instances`` row (``spool_path`` None once the spool copy was removed)."""
        return cls(
            instance_id=row.id,
            sop_instance_uid=row.sop_instance_uid,
            study_uid=row.study_uid,
            series_uid=row.series_uid,
            sop_class_uid=row.sop_class_uid,
            transfer_syntax=row.transfer_syntax,
            sha256=row.sha256,
            content_sha256=row.content_sha256,
            spool_path=row.spool_path if row.spool_removed_at is None else None,
            flagged=row.bytes_result in FLAGGED,
        )


@dataclass(frozen=True)
class CheckResult:
    """What one comparison found: the result, the digest expected and the one the archive's copy has."""

    target: CheckTarget
    result: ByteResult
    expected: str | None
    actual: str | None


def confirmed_in_study(ledger: Ledger, study_uid: str) -> list[CheckTarget]:
    """The newest version of every confirmed instance of the study (what a delete-time sample chooses from)."""
    joined = newest_versions(instances.c.study_uid == study_uid)
    with ledger.read() as conn:
        rows = conn.execute(select(instances).select_from(joined).where(instances.c.state == InstanceState.CONFIRMED.value)).all()
    return [CheckTarget.of(r) for r in rows]


def flagged_in_study(ledger: Ledger, study_uid: str) -> frozenset[str]:
    """SOP Instance UIDs of the study whose newest version's last byte check did not match."""
    joined = newest_versions(instances.c.study_uid == study_uid)
    with ledger.read() as conn:
        uids = conn.execute(select(instances.c.sop_instance_uid).select_from(joined).where(instances.c.bytes_result.in_(FLAGGED))).scalars()
        return frozenset(uids)


def newly_confirmed(ledger: Ledger, limit: int = 500) -> list[CheckTarget]:
    """Confirmed instances not yet seen by the byte verification since their confirmation, oldest first.

    A check that did not match clears ``bytes_due_at``, so an instance re-sent after one is seen
    again here once it is confirmed again.
    """
    with ledger.read() as conn:
        rows = conn.execute(
            select(instances)
            .where(
                instances.c.state == InstanceState.CONFIRMED.value,
                instances.c.bytes_due_at.is_(None),
            )
            .order_by(instances.c.confirmed_at, instances.c.id)
            .limit(limit),
        ).all()
    return [CheckTarget.of(r) for r in rows]


def schedule_rolling(ledger: Ledger, targets: Iterable[CheckTarget], window: timedelta) -> None:
    """Give instances not checked now their first rolling re-check, spread over ``window`` from now."""
    with ledger.transaction() as tx:
        now = tx.clock()
        for target in targets:
            due = now + window * spread(target.sop_instance_uid)
            tx.conn.execute(update(instances).where(instances.c.id == target.instance_id).values(bytes_due_at=due))


def due_for_rolling(ledger: Ledger, limit: int) -> list[CheckTarget]:
    """Confirmed instances whose rolling re-check is due, most overdue first."""
    now = ledger.clock()
    with ledger.read() as conn:
        rows = conn.execute(
            select(instances)
            .where(instances.c.state == InstanceState.CONFIRMED.value, instances.c.bytes_due_at <= now)
            .order_by(instances.c.bytes_due_at)
            .limit(limit),
        ).all()
    return [CheckTarget.of(r) for r in rows]


def overdue_count(ledger: Ledger, before: datetime) -> int:
    """Confirmed instances whose rolling re-check was due before ``before`` (a backlog the window does not absorb)."""
    with ledger.read() as conn:
        rows = conn.execute(
            select(instances.c.id).where(instances.c.state == InstanceState.CONFIRMED.value, instances.c.bytes_due_at < before)
        ).all()
    return len(rows)


def store_content_digest(ledger: Ledger, instance_id: int, digest: str) -> None:
    """Keep the content digest computed from the spool copy (``verify.compare = content``), for when the copy is gone."""
    with ledger.transaction() as tx:
        tx.conn.execute(update(instances).where(instances.c.id == instance_id).values(content_sha256=digest))


@dataclass(frozen=True)
class CheckContext:
    """How a batch of checks was made: who asked, by which retrieve, compared how, and the rolling window."""

    found_by: FoundBy
    method: str
    compare: str
    window: timedelta
    max_resends: int | None


def record_checks(
    ledger: Ledger, study_uid: str, results: list[CheckResult], context: CheckContext, spool_exists: Callable[[str], bool]
) -> dict[int, Disposition]:
    """Record the results of one study's checks and apply the rule to every instance that did not match.

    An instance that is no longer confirmed when the result is recorded (superseded, sent back
    meanwhile) keeps the record but is not sent back a second time. One ``bytes.checked``
    record sums the batch up. Returns instance id -> what became of each instance that did not match.
    """
    dispositions: dict[int, Disposition] = {}
    counts = dict.fromkeys([r.value for r in ByteResult], 0)
    with ledger.transaction() as tx:
        now = tx.clock()
        for item in results:
            counts[item.result.value] += 1
            tx.conn.execute(
                insert(byte_checks).values(
                    instance_id=item.target.instance_id,
                    study_uid=study_uid,
                    sop_instance_uid=item.target.sop_instance_uid,
                    checked_at=now,
                    found_by=context.found_by.value,
                    method=context.method,
                    compare=context.compare,
                    result=item.result.value,
                    expected_sha256=item.expected,
                    archive_sha256=item.actual,
                ),
            )
            # Matched, or no reference to compare with: next time by the rolling schedule. Otherwise
            # the instance goes back and is checked again as soon as it is confirmed again.
            settled = item.result in {ByteResult.MATCH, ByteResult.UNVERIFIABLE}
            tx.conn.execute(
                update(instances)
                .where(instances.c.id == item.target.instance_id)
                .values(bytes_checked_at=now, bytes_result=item.result.value, bytes_due_at=now + context.window if settled else None),
            )
            if settled:
                continue
            row = tx.conn.execute(select(instances).where(instances.c.id == item.target.instance_id)).one()
            if row.state != InstanceState.CONFIRMED.value:
                continue
            has_copy = row.spool_removed_at is None and row.spool_path is not None and spool_exists(row.spool_path)
            dispositions[row.id] = bytes_differ(
                tx,
                row,
                found_by=context.found_by,
                has_copy=has_copy,
                max_resends=context.max_resends,
                result=item.result.value,
                expected=item.expected,
                actual=item.actual,
            )
        differing = [r.target.sop_instance_uid for r in results if r.result is not ByteResult.MATCH]
        tx.audit(
            AuditEvent.BYTES_CHECKED,
            Outcome.SUCCESS if not differing else Outcome.FAILURE,
            actor=context.found_by.value,
            study_uid=study_uid,
            detail={
                "found_by": context.found_by.value,
                "method": context.method,
                "compare": context.compare,
                "checked": len(results),
                "counts": {k: v for k, v in counts.items() if v},
                "not_matching": differing[:50],
            },
        )
    return dispositions


def checks_of(ledger: Ledger, sop_instance_uid: str) -> list[dict[str, Any]]:
    """Every byte check of an instance, oldest first (for status and tests)."""
    with ledger.read() as conn:
        rows = conn.execute(
            select(byte_checks).where(byte_checks.c.sop_instance_uid == sop_instance_uid).order_by(byte_checks.c.id)
        ).mappings()
        return [{**dict(r), "checked_at": as_utc(r["checked_at"])} for r in rows]


def instance_kinds(ledger: Ledger, sop_instance_uids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (SOP Class UID, transfer syntax it was received in) of its newest version."""
    wanted = list(sop_instance_uids)
    joined = newest_versions(instances.c.sop_instance_uid.in_(wanted))
    with ledger.read() as conn:
        rows = conn.execute(
            select(instances.c.sop_instance_uid, instances.c.sop_class_uid, instances.c.transfer_syntax).select_from(joined)
        ).all()
    return {r.sop_instance_uid: (r.sop_class_uid, r.transfer_syntax) for r in rows}
