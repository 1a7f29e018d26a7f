"""The ledger on real SQLite and real PostgreSQL: ingest records, claims, leases, outcomes."""

from __future__ import annotations

import threading
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select

from guard.domain.states import AuditEvent
from guard.ledger.confirmations import CommitmentSchedule, commitment_schedule
from guard.ledger.db import migrate, open_engine
from guard.ledger.instances import (
    Receipt,
    ReceivedInstance,
    claim_pending,
    mark_dead_lettered,
    mark_failed,
    mark_forwarded,
    record_received,
    renew_leases,
    requeue_dead_letters,
)
from guard.ledger.ledger import Ledger
from guard.ledger.schema import audit_log, instances, series, studies
from guard.ledger.study_report import study_report

LEASE = timedelta(seconds=30)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _item(n: int, *, study: str = "1.2.3", sha: str = "a" * 64) -> ReceivedInstance:
    return ReceivedInstance(
        sop_instance_uid=f"1.2.3.4.{n}",
        study_uid=study,
        series_uid=f"{study}.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        size=1000 + n,
        sha256=sha,
        spool_path=f"{study}/1.2.3.4.{n}-{sha}.dcm",
        patient_id="PAT",
        modality="CT",
        calling_ae="PACS",
        peer_address="127.0.0.1",
    )


def _receive(ledger: Ledger, item: ReceivedInstance) -> tuple[Receipt, int]:
    with ledger.transaction() as tx:
        return record_received(tx, item)


def test_receipt_records_study_series_and_instance(ledger: Ledger) -> None:
    """A new instance creates its study, series and instance rows with every fact."""
    assert _receive(ledger, _item(1)) == (Receipt.NEW, 1)
    with ledger.engine.connect() as conn:
        row = conn.execute(select(instances)).one()
        assert conn.execute(select(func.count()).select_from(studies)).scalar() == 1
        assert conn.execute(select(series.c.modality)).scalar() == "CT"
    assert (row.state, row.size, row.calling_ae, row.peer_address, row.attempts) == ("received", 1001, "PACS", "127.0.0.1", 0)
    assert row.sha256 == "a" * 64
    assert row.transfer_syntax == "1.2.840.10008.1.2.1"


def test_identical_resend_is_idempotent_and_different_one_is_a_new_version(ledger: Ledger) -> None:
    """Same digest: nothing new. Other digest: version 2, and the waiting version 1 is superseded."""
    _receive(ledger, _item(1))
    assert _receive(ledger, _item(1)) == (Receipt.DUPLICATE, 1)
    assert _receive(ledger, _item(1, sha="b" * 64)) == (Receipt.NEW_VERSION, 2)
    with ledger.engine.connect() as conn:
        states = dict(conn.execute(select(instances.c.version, instances.c.state)).all())
    assert states == {1: "superseded", 2: "received"}
    assert study_report(ledger, "1.2.3", quiet=timedelta(0)).counts == {"received": 1}


def test_claims_are_exclusive_and_leased(ledger: Ledger) -> None:
    """Two owners never claim the same instance; an expired lease can be taken over."""
    clock = Clock()
    ledger.clock = clock
    for n in range(5):
        _receive(ledger, _item(n))
    first = claim_pending(ledger, "w1", 3, LEASE)
    second = claim_pending(ledger, "w2", 10, LEASE)
    assert len(first) == 3
    assert len(second) == 2
    assert not {c.id for c in first} & {c.id for c in second}
    assert claim_pending(ledger, "w3", 10, LEASE) == []
    clock.now += LEASE + timedelta(seconds=1)
    taken_over = claim_pending(ledger, "w3", 10, LEASE)
    assert len(taken_over) == 5
    assert all(c.attempts == 2 for c in taken_over)


def test_renewed_lease_is_not_taken_over(ledger: Ledger) -> None:
    """A heartbeat keeps a slow claim; a lost lease cannot settle."""
    clock = Clock()
    ledger.clock = clock
    _receive(ledger, _item(1))
    (claim,) = claim_pending(ledger, "w1", 1, LEASE)
    clock.now += timedelta(seconds=20)
    assert renew_leases(ledger, "w1", [claim.id], LEASE) == 1
    clock.now += timedelta(seconds=20)
    assert claim_pending(ledger, "w2", 1, LEASE) == []
    clock.now += LEASE
    (stolen,) = claim_pending(ledger, "w2", 1, LEASE)
    with ledger.transaction() as tx:
        assert not mark_forwarded(tx, claim, "w1", status=0, archive_ae="ARCHIVE")
        assert mark_forwarded(tx, stolen, "w2", status=0, archive_ae="ARCHIVE")
    assert study_report(ledger, "1.2.3", quiet=timedelta(0)).counts == {"forwarded": 1}


def test_concurrent_claimers_never_share(ledger: Ledger) -> None:
    """Eight threads claiming at once get disjoint sets covering all instances."""
    for n in range(80):
        _receive(ledger, _item(n))
    got: list[list[int]] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while batch := claim_pending(ledger, name, 3, LEASE):
            with lock:
                got.append([c.id for c in batch])

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [i for batch in got for i in batch]
    assert len(ids) == len(set(ids)) == 80


def test_outcomes_are_recorded_with_audit(ledger: Ledger) -> None:
    """Forwarded, failed and dead-lettered each change the state and write an audit record."""
    clock = Clock()
    ledger.clock = clock
    for n in range(3):
        _receive(ledger, _item(n))
    a, b, c = claim_pending(ledger, "w", 3, LEASE)
    with ledger.transaction() as tx:
        mark_forwarded(tx, a, "w", status=0, archive_ae="ARCHIVE")
        mark_failed(tx, b, "w", status=0xA700, error="out of resources", retry_at=clock.now + timedelta(seconds=10))
        mark_dead_lettered(tx, c, "w", status=0xA900, reason="permanent failure: 0xA900")
    status = study_report(ledger, "1.2.3", quiet=timedelta(0))
    assert status.counts == {"forwarded": 1, "failed": 1, "dead-lettered": 1}
    assert [asdict(d) for d in status.dead_letters] == [
        {"sop_instance_uid": c.sop_instance_uid, "reason": "permanent failure: 0xA900", "status": "0xA900", "attempts": 1}
    ]
    assert claim_pending(ledger, "w", 5, LEASE) == []
    clock.now += timedelta(seconds=11)
    assert [x.id for x in claim_pending(ledger, "w", 5, LEASE)] == [b.id]
    with ledger.engine.connect() as conn:
        events = [r.event for r in conn.execute(select(audit_log.c.event).order_by(audit_log.c.seq))]
    assert events == ["instance.forwarded", "instance.failed", "instance.dead_lettered"]


def test_dead_letters_can_be_requeued(ledger: Ledger) -> None:
    """A person re-queues dead letters; they become claimable with fresh attempts."""
    _receive(ledger, _item(1))
    (claim,) = claim_pending(ledger, "w", 1, LEASE)
    with ledger.transaction() as tx:
        mark_dead_lettered(tx, claim, "w", status=None, reason="gave up")
    assert requeue_dead_letters(ledger, study_uid="1.2.3", actor="cli") == 1
    (again,) = claim_pending(ledger, "w", 1, LEASE)
    assert again.attempts == 1
    assert study_report(ledger, "9.9", quiet=timedelta(0)).known is False


def test_audit_is_rolled_back_with_its_state_change(ledger: Ledger) -> None:
    """An audit record and the change it describes commit or vanish together."""
    try:
        with ledger.transaction() as tx:
            record_received(tx, _item(1))
            tx.audit(AuditEvent.INSTANCE_RECEIVED, sop_instance_uid="1.2.3.4.1")
            raise RuntimeError("crash before commit")  # noqa: TRY301
    except RuntimeError:
        pass
    with ledger.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(instances)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar() == 0


def test_an_sqlite_read_in_progress_holds_up_no_writer(tmp_path: Path) -> None:
    """A read (``Ledger.read``) begins deferred on SQLite: a write transaction commits while it is open, without waiting on it."""
    engine = open_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}", busy_timeout_ms=200)
    migrate(engine)
    ledger = Ledger(engine)
    try:
        with ledger.read() as conn:
            assert conn.execute(select(func.count()).select_from(instances)).scalar_one() == 0
            # With the read holding SQLite's write lock this would fail after 0.2 s: "database is locked".
            ledger.audit(AuditEvent.CONFIG_LOADED, detail={"during": "read"})
        with ledger.read() as conn:
            assert conn.execute(select(func.count()).select_from(audit_log)).scalar_one() == 1
    finally:
        engine.dispose()


def _forward(ledger: Ledger, *items: ReceivedInstance) -> None:
    """Receive ``items`` and record them forwarded, at the ledger's time now."""
    for item in items:
        _receive(ledger, item)
    claims = claim_pending(ledger, "w1", 10, LEASE)
    with ledger.transaction() as tx:
        for claim in claims:
            mark_forwarded(tx, claim, "w1", status=0, archive_ae="ARCHIVE")


def test_the_commitment_schedule_says_when_a_waiting_study_comes_due(ledger_engine: Engine) -> None:
    """A study is due ``quiet`` after its last forwarded instance, or at once when full; the schedule says when and how full."""
    clock = Clock()
    ledger = Ledger(ledger_engine, clock)
    quiet = timedelta(seconds=0.5)
    assert commitment_schedule(ledger, 5, quiet) == CommitmentSchedule(due=[], next_due_at=None, room=5)
    _forward(ledger, _item(1), _item(2))
    schedule = commitment_schedule(ledger, 5, quiet)
    assert (schedule.due, schedule.next_due_at, schedule.room) == ([], clock.now + quiet, 3)
    clock.now += timedelta(seconds=0.3)
    _forward(ledger, _item(3))  # the study's quiet time starts again
    schedule = commitment_schedule(ledger, 5, quiet)
    assert (schedule.due, schedule.next_due_at, schedule.room) == ([], clock.now + quiet, 2)
    clock.now += quiet
    (due,) = commitment_schedule(ledger, 5, quiet).due
    assert [r.sop_instance_uid for r in due[1]] == ["1.2.3.4.1", "1.2.3.4.2", "1.2.3.4.3"]
    _forward(ledger, *(_item(n, study="1.2.4") for n in range(10, 16)))  # six: one full request, one of one waiting
    schedule = commitment_schedule(ledger, 5, quiet)
    assert [(study, len(refs)) for study, refs in schedule.due] == [("1.2.3", 3), ("1.2.4", 5)]
    assert (schedule.next_due_at, schedule.room) == (clock.now + quiet, 4)
