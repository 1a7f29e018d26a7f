"""The status page's numbers (``status_snapshot``) from a real ledger, on SQLite and on PostgreSQL.

The per-minute throughput is computed in SQL with a different expression per database, so both
are checked against instances placed at known minutes.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, update

from guard.config.settings import Settings
from guard.dicom.probe import ArchiveProbe
from guard.domain.states import AuditEvent, InstanceState, Outcome
from guard.http.status import WINDOW_MINUTES, status_snapshot
from guard.ledger.instances import ReceivedInstance, record_received
from guard.ledger.ledger import Ledger
from guard.ledger.schema import instances

NOW = datetime(2026, 3, 4, 12, 30, 20, tzinfo=UTC)
_n = itertools.count(1)


def _receive(
    ledger: Ledger, study: str, *, at: datetime, state: InstanceState, confirmed_at: datetime | None = None, **extra: object
) -> str:
    sop = f"{study}.{next(_n)}"
    with ledger.transaction() as tx:
        record_received(
            tx,
            ReceivedInstance(
                sop_instance_uid=sop,
                study_uid=study,
                series_uid=f"{study}.0",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax="1.2.840.10008.1.2.1",
                size=10,
                sha256=f"{next(_n):064x}",
                spool_path=f"{study}/{sop}.dcm",
                patient_id="P1",
                modality="CT",
                calling_ae="PACS",
                peer_address="127.0.0.1",
            ),
        )
    with ledger.engine.begin() as conn:
        conn.execute(
            update(instances)
            .where(instances.c.sop_instance_uid == sop)
            .values(state=state.value, received_at=at, updated_at=at, confirmed_at=confirmed_at, **extra)
        )
    return sop


def test_snapshot_counts_queue_oldest_throughput_decisions_and_dead_letters(ledger_engine: Engine) -> None:
    """Known instances at known minutes give exactly the expected counts, buckets, oldest instance, decisions and dead letters."""
    ledger = Ledger(ledger_engine, clock=lambda: NOW)
    study_a, study_b = "1.2.826.0.1.3680043.10.1077.501", "1.2.826.0.1.3680043.10.1077.502"
    # Confirmed: received 10 minutes ago, confirmed 5 minutes ago (x2); one outside the hour.
    for _ in range(2):
        _receive(ledger, study_a, at=NOW - timedelta(minutes=10), state=InstanceState.CONFIRMED, confirmed_at=NOW - timedelta(minutes=5))
    _receive(ledger, study_a, at=NOW - timedelta(hours=3), state=InstanceState.CONFIRMED, confirmed_at=NOW - timedelta(hours=2))
    # Pending: the oldest unconfirmed is this forwarded one, 40 minutes old.
    oldest = _receive(ledger, study_b, at=NOW - timedelta(minutes=40), state=InstanceState.FORWARDED)
    _receive(ledger, study_b, at=NOW - timedelta(seconds=5), state=InstanceState.RECEIVED)
    _receive(ledger, study_b, at=NOW - timedelta(minutes=1), state=InstanceState.FAILED)
    dead = _receive(
        ledger, study_b, at=NOW - timedelta(minutes=2), state=InstanceState.DEAD_LETTERED, last_status=0xA900, last_error="mismatch"
    )
    ledger.audit(
        AuditEvent.DELETE_REFUSED,
        Outcome.REFUSED,
        actor="cli:ann",
        study_uid=study_b,
        detail={"channel": "cli", "reasons": ["unconfirmed"]},
    )
    ledger.audit(
        AuditEvent.DELETE_PERMITTED, actor="http-token", study_uid=study_a, detail={"channel": "http", "reasons": [], "sentence": "ok"}
    )

    view = status_snapshot(ledger, ArchiveProbe(Settings()))

    assert view.confirmed == 3
    assert view.pending == 3  # forwarded, received, failed
    assert view.queue_depth == 2  # received, failed
    assert view.dead_lettered == 1
    assert view.oldest_unconfirmed is not None
    assert view.oldest_unconfirmed.sop_instance_uid == oldest
    assert view.oldest_unconfirmed.age_seconds == 2400.0
    received, confirmed = view.throughput.received, view.throughput.confirmed
    assert len(received) == len(confirmed) == WINDOW_MINUTES
    last = WINDOW_MINUTES - 1  # the current minute, 12:30
    assert {i: n for i, n in enumerate(received) if n} == {last - 40: 1, last - 10: 2, last - 2: 1, last - 1: 1, last: 1}
    assert {i: n for i, n in enumerate(confirmed) if n} == {last - 5: 2}
    assert [(d.event, d.channel, d.reasons) for d in view.recent_decisions] == [
        ("delete.permitted", "http", []),
        ("delete.refused", "cli", ["unconfirmed"]),
    ]
    assert [(d.sop_instance_uid, d.status, d.reason) for d in view.dead_letters] == [(dead, "0xA900", "mismatch")]
    assert view.archive.reachable is None  # never probed
