"""Loop boundaries report failures: every one is logged, the first of each run is audited."""

from __future__ import annotations

from sqlalchemy import select

from guard.ledger.ledger import Ledger
from guard.ledger.schema import audit_log
from guard.services.boundary import FailureReporter


def _alerts(ledger: Ledger) -> list[str]:
    with ledger.engine.connect() as conn:
        return list(conn.execute(select(audit_log.c.detail).where(audit_log.c.event == "security.alert")).scalars())


def test_first_failure_of_each_run_is_audited(ledger: Ledger) -> None:
    """Three failures in a row give one alert; after a success, the next failure gives another."""
    reporter = FailureReporter(ledger, "forward-0")
    for _ in range(3):
        reporter.failed(RuntimeError("boom"))
    assert len(_alerts(ledger)) == 1
    assert "forward-0-failed" in _alerts(ledger)[0]
    reporter.succeeded()
    reporter.failed(RuntimeError("again"))
    assert len(_alerts(ledger)) == 2
