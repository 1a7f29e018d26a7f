"""Recording a received instance: every row a receipt writes, on real SQLite and real PostgreSQL.

SQLite records a receipt as separate statements, PostgreSQL as one statement of data-modifying
CTEs (``guard.ledger.receipt_statement``); each test runs on both and expects the same rows,
field by field, so the two cannot drift apart. The clock is moved by hand between receipts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update

from guard.domain.states import AuditEvent
from guard.ledger.instances import Receipt, ReceivedInstance, as_utc, mark_study_deleted, record_received
from guard.ledger.ledger import Ledger
from guard.ledger.schema import instances, series, studies

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STUDY = "1.2.826.0.1.3680043.10.7.1"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """The clock of ``node_ledger``."""
    return Clock()


@pytest.fixture
def node_ledger(ledger_engine: Engine, clock: Clock) -> Ledger:
    """A ledger of node ``node-a`` on the migrated database, with a hand-moved clock."""
    return Ledger(ledger_engine, clock, node="node-a")


def _item(n: int, *, series_no: int = 1, sha: str = "a", patient: str | None = "PAT", modality: str | None = "CT") -> ReceivedInstance:
    return ReceivedInstance(
        sop_instance_uid=f"{STUDY}.{series_no}.{n}",
        study_uid=STUDY,
        series_uid=f"{STUDY}.{series_no}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        size=1000 + n,
        sha256=sha * 64,
        spool_path=f"{STUDY}/{n}-{sha}.dcm",
        patient_id=patient,
        modality=modality,
        calling_ae="PACS",
        peer_address="127.0.0.1",
    )


def _receive(ledger: Ledger, item: ReceivedInstance) -> tuple[Receipt, int]:
    with ledger.transaction() as tx:
        return record_received(tx, item)


def _times(row: dict[str, Any]) -> dict[str, Any]:
    return {k: as_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _study(ledger: Ledger) -> dict[str, Any]:
    with ledger.read() as conn:
        return _times(dict(conn.execute(select(studies)).mappings().one()))


def _series(ledger: Ledger) -> dict[str, dict[str, Any]]:
    with ledger.read() as conn:
        return {r["series_uid"]: _times(dict(r)) for r in conn.execute(select(series)).mappings()}


def _instances(ledger: Ledger) -> dict[tuple[str, int], dict[str, Any]]:
    with ledger.read() as conn:
        rows = conn.execute(select(instances)).mappings()
        return {(r["sop_instance_uid"], r["version"]): _times({k: v for k, v in r.items() if k != "id"}) for r in rows}


def test_a_new_instance_of_a_new_study_writes_every_field(node_ledger: Ledger) -> None:
    """The first instance creates its study, its series and its instance row, each with every fact and the receipt's time."""
    item = _item(1)
    assert _receive(node_ledger, item) == (Receipt.NEW, 1)
    expected_study = {
        "study_uid": STUDY,
        "patient_id": "PAT",
        "first_received_at": T0,
        "last_received_at": T0,
        "last_verified_at": None,
        "deleted_at": None,
    }
    assert expected_study == _study(node_ledger)
    expected_series = {item.series_uid: {"series_uid": item.series_uid, "study_uid": STUDY, "modality": "CT", "first_received_at": T0}}
    assert expected_series == _series(node_ledger)
    row = _instances(node_ledger)[(item.sop_instance_uid, 1)]
    expected = {
        "study_uid": STUDY,
        "series_uid": item.series_uid,
        "sop_class_uid": item.sop_class_uid,
        "transfer_syntax": item.transfer_syntax,
        "size": 1001,
        "sha256": "a" * 64,
        "spool_path": item.spool_path,
        "patient_id": "PAT",
        "calling_ae": "PACS",
        "peer_address": "127.0.0.1",
        "node": "node-a",
        "state": "received",
        "attempts": 0,
        "confirm_attempts": 0,
        "resends": 0,
        "received_at": T0,
        "updated_at": T0,
        "next_attempt_at": T0,
        "forwarded_at": None,
        "lease_owner": None,
    }
    assert expected == {k: row[k] for k in expected}


def test_a_new_series_of_a_known_study_moves_only_its_last_receipt(node_ledger: Ledger, clock: Clock) -> None:
    """A known study keeps its patient and first receipt and becomes live again; a known series keeps its modality."""
    _receive(node_ledger, _item(1))
    with node_ledger.transaction() as tx:
        mark_study_deleted(tx, STUDY)
    clock.now = T0 + timedelta(minutes=5)
    assert _receive(node_ledger, _item(2, series_no=2, patient="OTHER", modality="MR")) == (Receipt.NEW, 1)
    clock.now = T0 + timedelta(minutes=6)
    assert _receive(node_ledger, _item(3, modality="US", patient=None)) == (Receipt.NEW, 1)
    study = _study(node_ledger)
    assert ("PAT", T0, T0 + timedelta(minutes=6), None) == (
        study["patient_id"],
        study["first_received_at"],
        study["last_received_at"],
        study["deleted_at"],
    )
    expected_series = {f"{STUDY}.1": ("CT", T0), f"{STUDY}.2": ("MR", T0 + timedelta(minutes=5))}
    assert expected_series == {uid: (r["modality"], r["first_received_at"]) for uid, r in _series(node_ledger).items()}
    assert sorted((r["patient_id"] for r in _instances(node_ledger).values()), key=lambda p: p or "") == [None, "OTHER", "PAT"]


def test_a_new_version_supersedes_only_the_versions_still_waiting(node_ledger: Ledger, clock: Clock) -> None:
    """Another digest is the next version; older versions waiting for forwarding are superseded at that time, a forwarded one is left."""
    item = _item(1)
    _receive(node_ledger, item)
    with node_ledger.transaction() as tx:
        tx.conn.execute(update(instances).where(instances.c.version == 1).values(state="forwarded"))
    clock.now = T0 + timedelta(minutes=1)
    assert _receive(node_ledger, replace(item, sha256="b" * 64)) == (Receipt.NEW_VERSION, 2)
    clock.now = T0 + timedelta(minutes=2)
    assert _receive(node_ledger, replace(item, sha256="c" * 64, size=7)) == (Receipt.NEW_VERSION, 3)
    rows = _instances(node_ledger)
    uid = item.sop_instance_uid
    expected = {1: ("forwarded", T0), 2: ("superseded", T0 + timedelta(minutes=2)), 3: ("received", T0 + timedelta(minutes=2))}
    assert expected == {v: (rows[(uid, v)]["state"], rows[(uid, v)]["updated_at"]) for v in (1, 2, 3)}
    assert (7, "c" * 64, T0 + timedelta(minutes=2)) == (rows[(uid, 3)]["size"], rows[(uid, 3)]["sha256"], rows[(uid, 3)]["received_at"])
    assert T0 + timedelta(minutes=2) == _study(node_ledger)["last_received_at"]


def test_a_duplicate_changes_nothing_and_only_the_newest_digest_counts(node_ledger: Ledger, clock: Clock) -> None:
    """The newest version's digest again is a duplicate that writes nothing; an older version's digest is a new version."""
    item = _item(1)
    _receive(node_ledger, item)
    clock.now = T0 + timedelta(minutes=1)
    _receive(node_ledger, replace(item, sha256="b" * 64))
    before = (_study(node_ledger), _series(node_ledger), _instances(node_ledger))
    clock.now = T0 + timedelta(minutes=2)
    assert _receive(node_ledger, replace(item, sha256="b" * 64, spool_path="elsewhere")) == (Receipt.DUPLICATE, 2)
    assert before == (_study(node_ledger), _series(node_ledger), _instances(node_ledger))
    assert _receive(node_ledger, item) == (Receipt.NEW_VERSION, 3)


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement ``engine`` sends through a cursor while the block runs."""
    sent: list[str] = []

    def on_execute(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


@pytest.mark.parametrize("ledger_engine", ["postgresql"], indirect=True)
def test_on_postgresql_a_receipt_is_one_statement_and_its_audit_three(node_ledger: Ledger, clock: Clock) -> None:
    """New, new series, new version, duplicate: one statement each, then the chain lock, the head and the record.

    The C-STORE answer waits on every one of them (a round trip to the server each).
    """
    node_ledger.audit(AuditEvent.SERVICE_STARTED)  # a chain with a head (an empty one also looks for the retention anchor)
    receipts = [_item(1), _item(2, series_no=2), replace(_item(1), sha256="b" * 64), _item(2, series_no=2)]
    counts = []
    for n, item in enumerate(receipts):
        clock.now = T0 + timedelta(seconds=n)
        with _statements(node_ledger.engine) as sent, node_ledger.transaction() as tx:
            receipt, _version = record_received(tx, item)
            counts.append(len(sent))
            if receipt is not Receipt.DUPLICATE:
                tx.audit(AuditEvent.INSTANCE_RECEIVED, study_uid=item.study_uid, sop_instance_uid=item.sop_instance_uid)
        counts.append(len(sent))
    assert counts == [1, 4, 1, 4, 1, 4, 1, 1]
