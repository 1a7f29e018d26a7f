"""The ATNA exporter: a durable outbox over the audit log, delivered to a syslog collector.

The outbox is the audit log itself plus a cursor (``audit_exports``, name ``atna-syslog``):
the sequence number of the last record handled. Each round reads the records after the
cursor, turns those that have a DICOM audit message into RFC 5424 messages, delivers them, and
only then moves the cursor. A collector outage therefore loses nothing: the records wait in
the ledger and are sent, in order, once it is back. The cursor starts at the beginning of the
audit log, so a newly configured collector receives the whole history.

With several nodes on one ledger one node at a time exports (the ``atna-export`` task lease,
``guard.ledger.leases``); the cursor moves only through the fenced ledger, so a node that lost
the lease cannot move it (it may have sent a batch again: the collector sees a record twice at
most, with the same ``seq``, never a gap).
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import structlog

from guard.config.settings import Settings
from guard.ledger import audit_export
from guard.ledger.audit_query import query_audit
from guard.ledger.leases import FencedLedger, TaskLease, new_owner
from guard.ledger.ledger import Ledger
from guard.runtime import metrics
from guard.services.audit.atna import Node, to_message
from guard.services.audit.syslog import SyslogSender, rfc5424

log = structlog.get_logger("guard.audit.export")

EXPORTER = "atna-syslog"


def export_cursor(ledger: Ledger, name: str = EXPORTER) -> int | None:
    """The last sequence number handled by exporter ``name`` (None: it never ran)."""
    return audit_export.export_cursor(ledger, name)


class AtnaExporter:
    """Delivers the audit log to the configured syslog collector, in order, from a thread."""

    def __init__(self, settings: Settings, ledger: Ledger, *, poll: float = 1.0) -> None:
        """Export ``ledger`` per ``settings.audit``; look for new records every ``poll`` seconds when idle."""
        self.settings = settings
        self.ledger = ledger
        self.poll = poll
        self.sender = SyslogSender(settings.audit)
        self.hostname = socket.gethostname()
        self.node = Node(ae_title=settings.node.ae_title, host=self.hostname, site_id=settings.audit.site_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False
        owner = new_owner(settings.node_id)
        self.lease = TaskLease(ledger, "atna-export", owner, timedelta(seconds=settings.node.lease_seconds))
        self._fenced = FencedLedger(ledger, self.lease)

    def run_once(self) -> int:
        """Deliver one batch; returns how many records the cursor moved over (0: nothing new, or another node exports)."""
        if not self.lease.hold():
            return 0
        after = export_cursor(self.ledger) or 0
        records = query_audit(self.ledger, after_seq=after, limit=self.settings.audit.syslog_batch)
        if not records:
            metrics.AUDIT_EXPORT_BACKLOG.set(0)
            return 0
        messages = []
        for record in records:
            xml = to_message(record, self.node)
            if xml is not None:
                messages.append(rfc5424(xml, at=record.at, hostname=self.hostname, seq=record.seq))
        self.sender.send(messages)
        last = records[-1].seq
        audit_export.save_export_cursor(self._fenced, EXPORTER, last)
        metrics.AUDIT_EXPORT_SENT.inc(len(messages))
        metrics.AUDIT_EXPORT_BACKLOG.set(max(0, audit_export.head_seq(self.ledger) - last))
        return len(records)

    def _loop(self) -> None:
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                moved = self.run_once()
            except Exception as exc:  # noqa: BLE001 - an outage of the collector (or the ledger) must not end the exporter
                metrics.AUDIT_EXPORT_UP.set(0)
                delay = min(self.settings.audit.syslog_retry_max, max(0.5, delay * 2))
                if not self._down:
                    self._down = True
                    log.warning(
                        "audit.export_failed",
                        action="audit.export_failed",
                        collector=f"{self.settings.audit.syslog_host}:{self.settings.audit.syslog_port}",
                        error=f"{exc.__class__.__name__}: {exc}",
                        message="audit messages are kept in the ledger and sent when the collector is back",
                    )
                continue
            metrics.AUDIT_EXPORT_UP.set(1)
            if self._down:
                log.info("audit.export_resumed", action="audit.export_resumed")
                self._down = False
            delay = 0.0 if moved else self.poll

    def start(self) -> AtnaExporter:
        """Run the exporter in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="atna-exporter", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current batch, delivering what is left if the collector takes it within ``timeout``.

        Whatever is not delivered stays in the outbox (the cursor tells where to resume).
        """
        self._stop.set()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            while time.monotonic() < deadline and self.run_once():
                pass
        except Exception as exc:  # noqa: BLE001 - stopping anyway; the records wait in the ledger
            log.warning("audit.export_deferred", action="audit.export_deferred", error=f"{exc.__class__.__name__}: {exc}")
        finally:
            self.sender.close()
            self.lease.release()
