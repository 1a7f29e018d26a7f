"""One rule for "the archive does not hold it (intact)", whoever finds it, and for sending an instance back.

Three readers of the archive can find that it does not hold an instance the ledger believes it
sent: the C-FIND confirmation of a forwarded instance (``find``), the periodic re-verification
of confirmed studies (``reverify``) and ``guard reconcile`` (``reconcile``). Each applies
``not_in_archive``, which leaves the same audit sequence (``docs/audit-events.md``):

1. ``instance.missing_in_archive``, with ``found_by``, the state it ``was`` in, and ``spool_copy``;
2. then, when the spool still holds a copy, ``send_back``: ``instance.failed`` with ``resend``
   (back to forwarding), or ``instance.dead_lettered`` once ``confirm.max_resends`` re-sends
   were used up; without a copy, the instance stays ``missing-in-archive`` and a
   ``security.alert`` with ``alert: lost-in-archive`` asks a person to act.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import Row, select, update

from guard.domain.states import AuditEvent, InstanceState, Outcome
from guard.ledger.audit import Transaction
from guard.ledger.instances import back_to_forwarding, subject_of
from guard.ledger.schema import instances


class FoundBy(StrEnum):
    """Who found that the archive does not list an instance."""

    FIND = "find"
    REVERIFY = "reverify"
    RECONCILE = "reconcile"
    CONFIRMATION = "confirmation"
    DELETE = "delete"


class Disposition(StrEnum):
    """What became of an instance the archive does not hold."""

    RESENT = "resent"
    DEAD_LETTERED = "dead-lettered"
    LOST = "lost"


def send_back(tx: Transaction, instance_id: int, reason: str, max_resends: int | None) -> Disposition:
    """Return an instance the archive does not hold to forwarding, or dead-letter it after ``max_resends`` re-sends (None: no bound)."""
    row = tx.conn.execute(select(instances).where(instances.c.id == instance_id)).one()
    if max_resends is not None and row.resends >= max_resends:
        final = f"archive does not keep it after {row.resends} re-send(s): {reason}"
        now = tx.clock()
        tx.conn.execute(
            update(instances)
            .where(instances.c.id == instance_id)
            .values(
                state=InstanceState.DEAD_LETTERED.value,
                last_error=final,
                commit_transaction_uid=None,
                commit_confirmed_at=None,
                find_confirmed_at=None,
                confirm_next_at=None,
                updated_at=now,
            )
        )
        tx.audit(AuditEvent.INSTANCE_DEAD_LETTERED, Outcome.FAILURE, detail={"reason": final, "resends": row.resends}, **subject_of(row))
        return Disposition.DEAD_LETTERED
    back_to_forwarding(tx, instance_id, resends=row.resends + 1, last_error=reason)
    tx.audit(AuditEvent.INSTANCE_FAILED, Outcome.FAILURE, detail={"error": reason, "resend": row.resends + 1}, **subject_of(row))
    return Disposition.RESENT


def not_in_archive(tx: Transaction, row: Row[Any], *, found_by: FoundBy, has_copy: bool, max_resends: int | None) -> Disposition:
    """The archive does not list the instance of ``row``: record it, then re-send from the spool or raise the alarm."""
    reason = f"not listed by the archive ({found_by.value})"
    tx.audit(
        AuditEvent.INSTANCE_MISSING,
        Outcome.FAILURE,
        actor=found_by.value,
        detail={"found_by": found_by.value, "was": row.state, "spool_copy": has_copy, "reason": reason},
        **subject_of(row),
    )
    return _evidence_against(tx, row, reason, found_by=found_by, has_copy=has_copy, max_resends=max_resends, alert=_LOST)


_LOST = ("lost-in-archive", "the archive does not list it and no spool copy is left")
_DAMAGED = ("damaged-in-archive", "the archive's copy differs from what the guard received and no spool copy is left")


def bytes_differ(
    tx: Transaction,
    row: Row[Any],
    *,
    found_by: FoundBy,
    has_copy: bool,
    max_resends: int | None,
    result: str,
    expected: str | None,
    actual: str | None,
) -> Disposition:
    """A byte check found the archive's copy of ``row`` damaged (differ) or missing (absent): record both digests, then the one rule."""
    reason = f"the archive's copy failed a byte check ({result}, {found_by.value})"
    tx.audit(
        AuditEvent.INSTANCE_BYTES_DIFFER,
        Outcome.FAILURE,
        actor=found_by.value,
        detail={
            "found_by": found_by.value,
            "result": result,
            "expected_sha256": expected,
            "archive_sha256": actual,
            "was": row.state,
            "spool_copy": has_copy,
            "reason": reason,
        },
        **subject_of(row),
    )
    return _evidence_against(tx, row, reason, found_by=found_by, has_copy=has_copy, max_resends=max_resends, alert=_DAMAGED)


def _evidence_against(
    tx: Transaction, row: Row[Any], reason: str, *, found_by: FoundBy, has_copy: bool, max_resends: int | None, alert: tuple[str, str]
) -> Disposition:
    """Re-send from the spool, or (no copy left) mark the instance not held and raise the alarm."""
    if has_copy:
        return send_back(tx, row.id, reason, max_resends)
    tx.conn.execute(update(instances).where(instances.c.id == row.id).values(state=InstanceState.MISSING.value, updated_at=tx.clock()))
    tx.audit(
        AuditEvent.SECURITY_ALERT,
        Outcome.FAILURE,
        actor=found_by.value,
        detail={"alert": alert[0], "message": alert[1], "was": row.state},
        **subject_of(row),
    )
    return Disposition.LOST
