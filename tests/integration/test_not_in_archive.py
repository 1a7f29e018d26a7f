"""One rule for "the archive does not list it": C-FIND confirmation, re-verification and reconcile leave the same trail.

Real SQLite and real PostgreSQL. The same fact (the archive does not list an instance the
ledger believes it sent) is found by each of the three readers of the archive; each must end
in the same state with the same sequence of audit events: ``instance.missing_in_archive``, then
``instance.failed`` (re-sent from the spool), ``instance.dead_lettered`` (re-sends used up) or a
``security.alert`` ``lost-in-archive`` (no spool copy left).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from guard.config.settings import ConfirmMode
from guard.ledger.confirmations import ConfirmPolicy, apply_find
from guard.ledger.instances import ReceivedInstance, claim_pending, mark_forwarded, record_received
from guard.ledger.ledger import Ledger
from guard.ledger.reconcile import reconcile_study
from guard.ledger.schema import audit_log, instances
from guard.ledger.verification import apply_reverification

STUDY = "1.2.826.0.1.3680043.10.1077.77"
SOP = f"{STUDY}.1.1"
MAX_RESENDS = 1


def _policy() -> ConfirmPolicy:
    return ConfirmPolicy(mode=ConfirmMode.FIND, max_resends=MAX_RESENDS, backoff=lambda _n: timedelta(seconds=1))


def _forwarded(ledger: Ledger) -> None:
    """One instance of the study, claimed and forwarded (the archive answered C-STORE Success)."""
    with ledger.transaction() as tx:
        record_received(
            tx,
            ReceivedInstance(
                sop_instance_uid=SOP,
                study_uid=STUDY,
                series_uid=f"{STUDY}.1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax="1.2.840.10008.1.2.1",
                size=100,
                sha256="b" * 64,
                spool_path=f"{STUDY}/{SOP}.dcm",
                patient_id="PAT",
                modality="CT",
                calling_ae="PACS",
                peer_address="127.0.0.1",
            ),
        )
    (claim,) = claim_pending(ledger, "w", 1, timedelta(seconds=30))
    with ledger.transaction() as tx:
        mark_forwarded(tx, claim, "w", status=0, archive_ae="ARCHIVE")


def _confirmed(ledger: Ledger) -> None:
    _forwarded(ledger)
    apply_find(ledger, STUDY, {SOP}, _policy())


def _by_find(ledger: Ledger, copy: bool) -> None:
    apply_find(ledger, STUDY, set(), _policy(), lambda _p: copy)


def _by_reverify(ledger: Ledger, copy: bool) -> None:
    apply_reverification(ledger, STUDY, set(), lambda _p: copy, max_resends=MAX_RESENDS)


def _by_reconcile(ledger: Ledger, copy: bool) -> None:
    reconcile_study(ledger, STUDY, set(), lambda _p: copy, max_resends=MAX_RESENDS)


#: Each finder, the state the instance is in when it finds it missing, and how it asks.
FINDERS: dict[str, tuple[Callable[[Ledger], None], Callable[[Ledger, bool], None]]] = {
    "find": (_forwarded, _by_find),
    "reverify": (_confirmed, _by_reverify),
    "reconcile": (_confirmed, _by_reconcile),
}


def _trail(ledger: Ledger, after: int) -> list[tuple[str, str, Any]]:
    """(event, outcome, alert or reason-free marker) of every record after ``after``, oldest first."""
    with ledger.read() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq)).all()

    trail = []
    for row in rows:
        detail = json.loads(row.detail)
        trail.append((row.event, row.outcome, detail.get("alert") or detail.get("resend") or detail.get("spool_copy")))
    return trail


def _head(ledger: Ledger) -> int:
    with ledger.read() as conn:
        return int(conn.execute(select(audit_log.c.seq).order_by(audit_log.c.seq.desc()).limit(1)).scalar() or 0)


def _state(ledger: Ledger) -> str:
    with ledger.read() as conn:
        return str(conn.execute(select(instances.c.state).order_by(instances.c.version.desc()).limit(1)).scalar_one())


@pytest.mark.parametrize("finder", sorted(FINDERS))
def test_a_missing_instance_with_a_spool_copy_is_resent_then_dead_lettered_the_same_way(ledger: Ledger, finder: str) -> None:
    """Whoever finds it: missing_in_archive then failed (re-sent); once re-sends are used up, missing_in_archive then dead_lettered."""
    setup, find = FINDERS[finder]
    setup(ledger)
    start = _head(ledger)
    find(ledger, True)  # noqa: FBT003 - the spool copy is there
    assert _trail(ledger, start) == [("instance.missing_in_archive", "failure", True), ("instance.failed", "failure", 1)]
    assert _state(ledger) == "received"
    again = _head(ledger)
    (claim,) = claim_pending(ledger, "w", 1, timedelta(seconds=30))
    with ledger.transaction() as tx:
        mark_forwarded(tx, claim, "w", status=0, archive_ae="ARCHIVE")
    if finder != "find":
        apply_find(ledger, STUDY, {SOP}, _policy())
    start = _head(ledger)
    assert start > again
    find(ledger, True)  # noqa: FBT003 - the spool copy is there
    assert _trail(ledger, start) == [("instance.missing_in_archive", "failure", True), ("instance.dead_lettered", "failure", None)]
    assert _state(ledger) == "dead-lettered"


@pytest.mark.parametrize("finder", sorted(FINDERS))
def test_a_missing_instance_without_a_spool_copy_raises_the_same_alert(ledger: Ledger, finder: str) -> None:
    """Whoever finds it: missing_in_archive then security.alert lost-in-archive, and the instance stays missing-in-archive."""
    setup, find = FINDERS[finder]
    setup(ledger)
    start = _head(ledger)
    find(ledger, False)  # noqa: FBT003 - no spool copy left
    assert _trail(ledger, start) == [("instance.missing_in_archive", "failure", False), ("security.alert", "failure", "lost-in-archive")]
    assert _state(ledger) == "missing-in-archive"


def test_the_missing_record_names_who_found_it(ledger: Ledger) -> None:
    """The instance.missing_in_archive record says which reader found it and the state it was in."""
    _forwarded(ledger)
    start = _head(ledger)
    _by_find(ledger, True)  # noqa: FBT003 - the spool copy is there
    with ledger.read() as conn:
        row = conn.execute(select(audit_log).where(audit_log.c.seq > start).order_by(audit_log.c.seq).limit(1)).one()
    assert (row.event, row.actor, row.sop_instance_uid) == ("instance.missing_in_archive", "find", SOP)
    assert '"found_by": "find"' in row.detail
    assert '"was": "forwarded"' in row.detail
