"""The audit log's own work inside ``guard serve``: the start-up chain check, ATNA export, retention."""

from __future__ import annotations

import threading
from datetime import timedelta

import structlog

from guard.config.settings import Settings
from guard.domain.states import AuditEvent, Outcome
from guard.ledger.audit_verify import verify_chain
from guard.ledger.leases import FencedLedger, TaskLease, new_owner
from guard.ledger.ledger import Ledger
from guard.runtime import metrics
from guard.services.audit.exporter import AtnaExporter
from guard.services.audit.retention import apply_retention
from guard.services.boundary import FailureReporter

log = structlog.get_logger("guard.audit")


def check_chain_tail(settings: Settings, ledger: Ledger) -> bool:
    """Verify the newest ``audit.verify_tail`` records; a break is logged and raised as a security alert.

    The guard keeps running either way (refusing to receive images because the audit log was
    tampered with would only put the images at risk); the alert, the metric and
    ``guard audit verify`` tell an administrator where to look.
    """
    tail = settings.audit.verify_tail
    if tail == 0:
        return True
    report = verify_chain(ledger, tail=tail)
    metrics.AUDIT_CHAIN_INTACT.set(1 if report.ok else 0)
    if report.broken is None:
        log.info("audit.chain_verified", action="audit.chain_verified", records=report.checked, last_seq=report.last_seq)
        return True
    message = f"audit log hash chain broken at record {report.broken.seq}: {report.broken.message}"
    log.error("audit.chain_broken", action="audit.chain_broken", seq=report.broken.seq, kind=report.broken.kind, message=message)
    ledger.audit(
        AuditEvent.SECURITY_ALERT,
        Outcome.FAILURE,
        actor=settings.node.ae_title,
        detail={"alert": "audit-chain-broken", "seq": report.broken.seq, "kind": report.broken.kind, "message": message},
    )
    return False


class AuditTasks:
    """Runs the exporter (when a collector is configured) and retention (when a period is set)."""

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        """Prepare the tasks for ``settings.audit``."""
        self.settings = settings
        self.ledger = ledger
        self.exporter = AtnaExporter(settings, ledger) if settings.audit.syslog_host else None
        self._stop = threading.Event()
        self._retention: threading.Thread | None = None
        self._report = FailureReporter(ledger, "audit-retention")
        # One node of a cluster cuts the audit log at a time (its export files are on that node).
        owner = new_owner(settings.node_id)
        self.retention_lease = TaskLease(ledger, "audit-retention", owner, timedelta(seconds=settings.node.lease_seconds))

    def start(self) -> AuditTasks:
        """Check the chain's tail, then start the background tasks."""
        check_chain_tail(self.settings, self.ledger)
        if self.exporter is not None:
            self.exporter.start()
        if self.settings.audit.retention_days > 0:
            self._retention = threading.Thread(target=self._retention_loop, name="audit-retention", daemon=True)
            self._retention.start()
        return self

    def _retention_loop(self) -> None:
        interval = self.settings.audit.retention_interval_hours * 3600
        fenced = FencedLedger(self.ledger, self.retention_lease)
        while not self._stop.is_set():
            if not self.retention_lease.hold():
                self._stop.wait(self.settings.node.lease_seconds)
                continue
            try:
                result = apply_retention(self.settings, fenced)
            except Exception as exc:  # noqa: BLE001 - reported (log + audit once) and tried again next round
                self._report.failed(exc)
            else:
                self._report.succeeded()
                if result is not None:
                    log.info("audit.retention", action="audit.retention", file=str(result.file), records=result.records)
            self._stop.wait(interval)

    def stop(self) -> None:
        """Stop the background tasks."""
        self._stop.set()
        if self.exporter is not None:
            self.exporter.stop()
        if self._retention is not None:
            self._retention.join(10)
        self.retention_lease.release()
