"""When a source's commitment report is ready: the arrival grace for instances the guard never received (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from guard.domain.status import NO_SUCH_OBJECT_INSTANCE, PROCESSING_FAILURE
from guard.ledger.instances import ReceivedInstance, record_received
from guard.ledger.ledger import Ledger
from guard.ledger.schema import instances
from guard.ledger.source_commitments import evaluate_inbound, record_inbound

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY = "1.2.826.0.1.3680043.10.1077.55"
HELD, NEVER = f"{STUDY}.1.1", f"{STUDY}.1.9"
GRACE = timedelta(minutes=5)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _setup(engine_ledger: Ledger, *, confirmed: bool) -> tuple[Ledger, Clock]:
    clock = Clock()
    ledger = Ledger(engine_ledger.engine, clock)
    with ledger.transaction() as tx:
        record_received(
            tx,
            ReceivedInstance(
                HELD, STUDY, f"{STUDY}.1", CT, "1.2.840.10008.1.2.1", 10, "c" * 64, f"{STUDY}/{HELD}.dcm", "P", "CT", "PACS", "::1"
            ),
        )
        if confirmed:
            tx.conn.execute(update(instances).values(state="confirmed"))
    record_inbound(
        ledger,
        transaction_uid="1.2.3.77",
        source_ae="PACS",
        peer_address="::1",
        references=[(CT, HELD), (CT, NEVER)],
        deadline=timedelta(hours=1),
    )
    return ledger, clock


def test_never_received_is_reported_once_the_grace_has_passed_and_the_rest_is_confirmed(ledger: Ledger) -> None:
    """Not ready within the grace; after it, ready with the confirmed one succeeded and the unknown one failed 0x0112."""
    ledger, clock = _setup(ledger, confirmed=True)
    assert not evaluate_inbound(ledger, "1.2.3.77", arrival_grace=GRACE).ready
    clock.now += GRACE
    verdict = evaluate_inbound(ledger, "1.2.3.77", arrival_grace=GRACE)
    assert verdict.ready
    assert verdict.successes == [(CT, HELD)]
    assert verdict.failures == [(CT, NEVER, NO_SUCH_OBJECT_INSTANCE)]


def test_an_unconfirmed_instance_still_waits_for_the_deadline(ledger: Ledger) -> None:
    """After the grace, a received but unconfirmed instance keeps the report waiting; at the deadline it fails 0x0110."""
    ledger, clock = _setup(ledger, confirmed=False)
    clock.now += GRACE
    assert not evaluate_inbound(ledger, "1.2.3.77", arrival_grace=GRACE).ready
    clock.now += timedelta(hours=1)
    verdict = evaluate_inbound(ledger, "1.2.3.77", arrival_grace=GRACE)
    assert verdict.ready
    assert sorted(verdict.failures) == sorted([(CT, HELD, PROCESSING_FAILURE), (CT, NEVER, NO_SUCH_OBJECT_INSTANCE)])
