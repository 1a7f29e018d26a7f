"""What a background loop does with an error it did not expect.

The forwarding workers and the confirmation loops are boundaries: an unexpected error must
neither end the loop nor pass unnoticed. Each failure is logged with its traceback; the first
of a run of failures is also an audit record (``security.alert`` with ``alert:
<component>-failed``), so a person sees it without the audit log filling up with one record per
round while, say, the ledger is down. Recovery is logged.
"""

from __future__ import annotations

import structlog

from guard.domain.states import AuditEvent, Outcome
from guard.ledger.ledger import Ledger

log = structlog.get_logger("guard.services.boundary")


class FailureReporter:
    """Logs every failure of one loop and audits the first of each run of failures."""

    def __init__(self, ledger: Ledger, component: str) -> None:
        """Report for ``component`` (e.g. ``forward-0``, ``confirm``)."""
        self.ledger = ledger
        self.component = component
        self.failing = False

    def failed(self, exc: BaseException) -> None:
        """Record an unexpected error at the boundary."""
        log.error("loop.failed", action="loop.failed", component=self.component, error=repr(exc), exc_info=exc)
        if self.failing:
            return
        self.failing = True
        self.ledger.audit_or_log(
            AuditEvent.SECURITY_ALERT,
            Outcome.FAILURE,
            actor=self.component,
            detail={"alert": f"{self.component}-failed", "error": f"{exc.__class__.__name__}: {exc}"[:500]},
        )

    def succeeded(self) -> None:
        """The loop went round without an error."""
        if self.failing:
            self.failing = False
            log.info("loop.recovered", action="loop.recovered", component=self.component)
