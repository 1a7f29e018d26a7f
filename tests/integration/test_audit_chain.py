"""The audit hash chain on real SQLite and PostgreSQL: tampering is found, writes are atomic."""

from __future__ import annotations

import itertools
import threading

import pytest
from alembic import command
from sqlalchemy import Engine, func, select, text, update

from guard.domain.errors import LedgerError
from guard.domain.states import AuditEvent, Outcome
from guard.ledger.audit_verify import verify_chain
from guard.ledger.db import alembic_config, migrate
from guard.ledger.instances import ReceivedInstance, record_received
from guard.ledger.ledger import Ledger
from guard.ledger.schema import audit_log, instances


def _fill(ledger: Ledger, n: int) -> None:
    for i in range(n):
        ledger.audit(AuditEvent.SECURITY_ALERT, Outcome.FAILURE, actor=f"AE{i}", study_uid=f"1.2.{i}", detail={"n": i, "text": "é"})


def _item(n: int) -> ReceivedInstance:
    return ReceivedInstance(
        sop_instance_uid=f"1.2.3.4.{n}",
        study_uid="1.2.3",
        series_uid="1.2.3.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        size=1000,
        sha256="a" * 64,
        spool_path=f"1.2.3/1.2.3.4.{n}.dcm",
        patient_id="PAT",
        modality="CT",
        calling_ae="PACS",
        peer_address="127.0.0.1",
    )


def test_records_form_an_unbroken_chain(ledger: Ledger) -> None:
    """Sequence numbers start at 1 without gaps, each record names the previous one's hash."""
    _fill(ledger, 5)
    with ledger.transaction() as tx:  # several records in one transaction
        for i in range(3):
            tx.audit(AuditEvent.CONFIG_LOADED, detail={"i": i})
    report = verify_chain(ledger)
    assert report.ok, report.broken
    assert (report.checked, report.first_seq, report.last_seq) == (8, 1, 8)
    with ledger.engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.seq, audit_log.c.prev_hash, audit_log.c.hash).order_by(audit_log.c.seq)).all()
    assert rows[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert report.last_hash == rows[-1].hash


def test_one_changed_byte_is_found_with_its_sequence_number(ledger: Ledger) -> None:
    """Editing a record's detail (one character) breaks the chain exactly at that record."""
    _fill(ledger, 6)
    with ledger.engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 4).values(detail=func.replace(audit_log.c.detail, "3", "4")))
    report = verify_chain(ledger)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (4, "altered")
    assert report.checked == 4


def test_a_deleted_record_is_found(ledger: Ledger) -> None:
    """Removing a record leaves a gap that the walk names."""
    _fill(ledger, 6)
    with ledger.engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq == 3))
    report = verify_chain(ledger)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.kind) == (3, "missing")


def test_a_deleted_record_with_renumbering_is_found(ledger: Ledger) -> None:
    """Removing a record and closing the gap by renumbering breaks the link into the next one."""
    _fill(ledger, 6)
    with ledger.engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.seq == 3))
        for seq in (4, 5, 6):
            conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(seq=seq - 1))
    report = verify_chain(ledger)
    assert report.broken is not None
    assert report.broken.seq == 3


def test_two_swapped_records_are_found(ledger: Ledger) -> None:
    """Swapping two records (every column but the sequence number) is found at the first of them."""
    _fill(ledger, 6)
    cols = [c for c in audit_log.c if c.name != "seq"]
    with ledger.engine.begin() as conn:
        a = conn.execute(select(*cols).where(audit_log.c.seq == 2)).one()._asdict()
        b = conn.execute(select(*cols).where(audit_log.c.seq == 5)).one()._asdict()
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(**b))
        conn.execute(update(audit_log).where(audit_log.c.seq == 5).values(**a))
    report = verify_chain(ledger)
    assert report.broken is not None
    assert report.broken.seq == 2


def test_a_tail_walk_checks_only_the_newest_records(ledger: Ledger) -> None:
    """The start-up check reads the last N records; damage before them is left to the full walk."""
    _fill(ledger, 10)
    with ledger.engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(actor="MALLORY"))
    tail = verify_chain(ledger, tail=5)
    assert tail.ok
    assert (tail.first_seq, tail.checked) == (6, 5)
    with ledger.engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 8).values(actor="MALLORY"))
    tail = verify_chain(ledger, tail=5)
    assert tail.broken is not None
    assert tail.broken.seq == 8
    full = verify_chain(ledger)
    assert full.broken is not None
    assert full.broken.seq == 2


def test_concurrent_writers_do_not_fork_the_chain(ledger: Ledger) -> None:
    """Eight threads writing records and state changes at once leave one contiguous, valid chain."""
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(15):
                with ledger.transaction() as tx:
                    record_received(tx, _item(k * 100 + i))
                    tx.audit(AuditEvent.INSTANCE_RECEIVED, actor="PACS", sop_instance_uid=f"1.2.3.4.{k * 100 + i}")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    report = verify_chain(ledger)
    assert report.ok, report.broken
    assert report.checked >= 120


def _break_audit_inserts(engine: Engine) -> None:
    """A real database trigger that refuses every new audit record (a full or broken audit store)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER no_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit store refused'); END"))
        else:
            body = "BEGIN RAISE EXCEPTION 'audit store refused'; END"
            conn.execute(text(f"CREATE FUNCTION no_audit() RETURNS trigger AS $$ {body} $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER no_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION no_audit()"))


def test_a_state_change_without_its_audit_record_does_not_happen(ledger: Ledger) -> None:
    """When the audit record cannot be written, the instance row is rolled back with it."""
    _break_audit_inserts(ledger.engine)
    with pytest.raises(LedgerError):
        _receive_and_audit(ledger)
    with ledger.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(instances)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar() == 0


def test_an_audit_record_without_its_state_change_does_not_exist(ledger: Ledger) -> None:
    """When the state change fails (a duplicate key here), its audit record is not kept either."""
    with ledger.transaction() as tx:
        record_received(tx, _item(1))
        tx.audit(AuditEvent.INSTANCE_RECEIVED, sop_instance_uid="1.2.3.4.1")
    row = {k: v for k, v in _item(1).__dict__.items() if k in instances.c and k != "modality"}
    with pytest.raises(LedgerError):
        _audit_then_insert_twice(ledger, row)
    with ledger.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar() == 1
    assert verify_chain(ledger).ok


def _receive_and_audit(ledger: Ledger) -> None:
    with ledger.transaction() as tx:
        record_received(tx, _item(1))
        tx.audit(AuditEvent.INSTANCE_RECEIVED, actor="PACS", sop_instance_uid="1.2.3.4.1")


def _audit_then_insert_twice(ledger: Ledger, row: dict[str, object]) -> None:
    with ledger.transaction() as tx:
        tx.audit(AuditEvent.INSTANCE_RECEIVED, sop_instance_uid="1.2.3.4.1", detail={"attempt": "second"})
        tx.conn.execute(instances.insert().values(id=1, version=1, state="received", **_dates(ledger), **row))


def _dates(ledger: Ledger) -> dict[str, object]:
    now = ledger.clock()
    return {"received_at": now, "updated_at": now, "next_attempt_at": now}


def test_upgrading_an_older_ledger_chains_its_records(ledger_engine: Engine) -> None:
    """Records written before the chain existed are chained by the migration and verify."""
    command.downgrade(alembic_config(ledger_engine), "0003")
    with ledger_engine.begin() as conn:
        for i in range(4):
            conn.execute(
                text("INSERT INTO audit_log (at, event, outcome, detail) VALUES (:at, 'service.started', 'success', :d)"),
                {"at": f"2026-01-01 00:00:0{i}", "d": f'{{"i": {i}}}'},
            )
    migrate(ledger_engine)
    ledger = Ledger(ledger_engine)
    _fill(ledger, 2)
    report = verify_chain(ledger)
    assert report.ok, report.broken
    assert report.checked == 6


def test_detail_keys_named_like_record_fields_are_kept(ledger: Ledger) -> None:
    """A detail holding ``seq`` or ``event`` is stored as given and logged without clashing with the record's own fields."""
    ledger.audit(AuditEvent.SECURITY_ALERT, Outcome.FAILURE, detail={"seq": 7, "event": "x", "level": "high"})
    with ledger.engine.connect() as conn:
        stored = conn.execute(select(audit_log.c.detail)).scalar_one()
    assert stored == '{"event": "x", "level": "high", "seq": 7}'
