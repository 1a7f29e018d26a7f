"""A whole guard node: the ledger, the spool, the DICOM listener, the workers, the admin API, started and stopped in order.

With ``node.listener_process`` the listener runs in a child process (``listener_process``,
``listener_child``); everything else stays here.
"""

from __future__ import annotations

import signal
import threading

import structlog

from guard import __version__, runtime
from guard.app.listener_moves import ListenerMoves
from guard.app.listener_process import ListenerSupervisor
from guard.config.settings import Settings, digest
from guard.dicom import tls
from guard.dicom.probe import ArchiveProbe
from guard.domain.states import AuditEvent, Outcome
from guard.http.app import create_app
from guard.http.readiness import directory_writable, ledger_reachable
from guard.http.server import AdminServer
from guard.ledger.db import open_ledger
from guard.ledger.ledger import Ledger
from guard.listener.server import IngestServer
from guard.runtime import tls as tls_contexts
from guard.sandbox.archive import ReferenceArchive
from guard.services.archive import open_archive
from guard.services.audit.tasks import AuditTasks
from guard.services.certificates import reload_certificates
from guard.services.confirm.confirmer import Confirmer
from guard.services.delete.gate import DeleteGate
from guard.services.forward.worker import Forwarder
from guard.services.ingest import IngestService
from guard.services.nodes import NodeHeartbeat
from guard.services.qr.inflight import RelayRegistry
from guard.services.qr.relay import QueryRetrieveRelay
from guard.services.sweep import SpoolSweep
from guard.services.verify.choose import build_verifier
from guard.spool import Spool
from guard.web.backends import make_backend

log = structlog.get_logger("guard.app")


class GuardService:
    """Starts and stops the parts of a guard in the right order."""

    def __init__(self, settings: Settings, config_path: str | None = None, *, migrate_apart: bool = False) -> None:
        """Prepare a guard for ``settings``; nothing runs until ``start``.

        ``migrate_apart``: a ledger that needs migrating is migrated in a child process, so that
        this one never loads Alembic (``guard serve``; ``guard.ledger.db.migrate_in_child``).
        """
        self.settings = settings
        self.config_path = config_path
        self.migrate_apart = migrate_apart
        self.spool = Spool(settings.spool_dir)
        self.ledger: Ledger | None = None
        self.reference_archive: ReferenceArchive | None = None
        self.forwarder: Forwarder | None = None
        self.confirmer: Confirmer | None = None
        self.gate: DeleteGate | None = None
        self.admin: AdminServer | None = None
        self.server: IngestServer | None = None
        self.listener: ListenerSupervisor | None = None
        self.probe: ArchiveProbe | None = None
        self.audit_tasks: AuditTasks | None = None
        self.sweep: SpoolSweep | None = None
        self.heartbeat: NodeHeartbeat | None = None
        #: Set on stop: /readyz answers 503 (draining) while the listener still serves.
        self.draining = threading.Event()
        self._stopped = threading.Event()
        self.relays: RelayRegistry | None = None
        #: With the listener in its own process: the byte checks' C-MOVEs, announced to it (also ``relays``).
        self.moves: ListenerMoves | None = None

    def start(self) -> None:
        """Open the ledger and spool, then the archive sandbox if any, the workers, and the port."""
        self.spool.prepare()
        runtime.configure_dicom(self.spool.incoming, self.settings.node.max_dataset_size)
        tls_contexts.configure(self.settings.tls)
        if tls.in_use(self.settings):
            tls_contexts.load()  # unusable certificate files stop the start, naming the file
        ledger = self.ledger = open_ledger(self.settings, migrate_apart=self.migrate_apart)
        # Before anything else uses the ledger: an SQLite ledger refuses a second node here.
        self.heartbeat = NodeHeartbeat(self.settings, ledger, lambda: all(self._readiness().values())).register()
        self.audit_tasks = AuditTasks(self.settings, ledger).start()
        unknown = self.settings.unknown_environment
        for variable in unknown:
            log.warning("config.unknown_variable", action="config.unknown_variable", variable=variable.name, suggestion=variable.suggestion)
        ledger.audit(
            AuditEvent.CONFIG_LOADED,
            detail={
                "digest": digest(self.settings),
                "path": self.config_path,
                "builtin_archive": self.settings.archive.builtin,
                "unknown_environment": [variable.name for variable in unknown],
            },
        )
        if self.settings.archive.builtin:
            self._start_reference_archive(ledger)
        archive = open_archive(self.settings)
        # Byte verification by C-MOVE receives on the listener: one registry of moves in flight for both in one process;
        # with the listener in its own process, the moves are announced to it (guard.app.listener_moves).
        self.moves = ListenerMoves(self.spool.incoming) if self.settings.node.listener_process else None
        self.relays = self.moves if self.moves is not None else RelayRegistry()
        verifier = build_verifier(self.settings, ledger, self.spool, self.relays)
        self.confirmer = Confirmer(self.settings, ledger, self.spool, archive=archive, verifier=verifier)
        # Each forwarded batch tells the confirmer when its commitment request can be due: an idle
        # confirmer looks for work less and less often (guard.domain.pacing), and requests must not
        # wait for its next look.
        self.forwarder = Forwarder(self.settings, ledger, self.spool, sender_factory=archive.sender, on_forwarded=self.confirmer.forwarded)
        self.forwarder.start()
        self.confirmer.start()
        self.gate = DeleteGate(self.settings, ledger, make_backend(self.settings.delete), archive, verifier)
        # What a crash left in the spool goes before the listener opens (and then periodically).
        self.sweep = SpoolSweep(self.settings, ledger, self.spool).start()
        dicom_port = self._start_listener(ledger, self.forwarder, self.confirmer, self.gate)
        if self.reference_archive is not None:
            # The port actually bound (node.port may be 0): where the sandbox archive reports.
            self.reference_archive.add_requester(self.settings.node.ae_title, "127.0.0.1", dicom_port)
        self.probe = ArchiveProbe(self.settings, archive.ping, archive.description).start()
        if self.settings.http.port:  # 0 disables the admin API
            app = create_app(self.settings, ledger, self.gate, self._readiness, self.probe)
            http = self.settings.http
            self.admin = AdminServer(
                app, host=http.bind, port=http.port, certificate=http.certificate, private_key=http.private_key
            ).start()
        self.heartbeat.start(dicom_port=dicom_port, http_port=self.admin.port if self.admin is not None else None)
        ledger.audit(
            AuditEvent.SERVICE_STARTED,
            actor=self.settings.node.ae_title,
            detail={
                "version": __version__,
                "node": self.settings.node_id,
                "spool": "shared" if self.settings.spool.shared else "node-local",
                "dicom_port": dicom_port,
                "listener_pid": self.listener.pid if self.listener is not None else None,
                "dicom_tls_port": self.settings.tls.port or None,
                "http_port": self.admin.port if self.admin is not None else None,
                "archive": self.settings.archive.where,
            },
        )

    def _start_listener(self, ledger: Ledger, forwarder: Forwarder, confirmer: Confirmer, gate: DeleteGate) -> int:
        """Start the DICOM listener here or in its own process; the port it bound."""
        if self.settings.node.listener_process:
            self.listener = ListenerSupervisor(self.settings, self.config_path, ledger, forwarder.wake, confirmer.wake, self.moves).start()
            return self.listener.port
        ingest = IngestService(self.settings, ledger, self.spool, on_received=forwarder.wake, gate=gate)
        self.server = IngestServer(self.settings, ingest, confirmer, QueryRetrieveRelay(self.settings, ledger, self.relays))
        self.server.start()
        return self.server.port

    def reload_certificates(self) -> bool:
        """Reload the DICOM TLS and HTTPS certificates from their files (SIGHUP); False if one failed (old one kept)."""
        if self.ledger is None:
            return False
        https = self.admin.reload_certificate if self.admin is not None and self.admin.certificate is not None else None
        if self.listener is not None:
            self.listener.forward_signal(signal.SIGHUP)
        return reload_certificates(self.settings, self.ledger, https)

    def _start_reference_archive(self, ledger: Ledger) -> None:
        """Run the sandbox archive and make sure nobody mistakes it for a real one."""
        archive = self.settings.archive
        folder = self.settings.node.data_dir / "reference-archive"
        # It reports Storage Commitment to the guard's listener, registered once that is bound.
        self.reference_archive = ReferenceArchive(folder, ae_title=archive.ae_title, port=archive.port).start()
        message = "no archive configured: using the built-in reference archive, a sandbox that is NOT for production"
        log.warning("archive.builtin", action="archive.builtin", port=archive.port, directory=str(folder), message=message)
        ledger.audit(AuditEvent.SECURITY_ALERT, Outcome.FAILURE, detail={"alert": "builtin-archive", "message": message})

    def _readiness(self) -> dict[str, bool]:
        """Checks behind /readyz: the ledger answers, the spool takes files, the workers run."""
        checks = {
            "ledger": self.ledger is not None and ledger_reachable(self.ledger),
            "spool": directory_writable(self.spool.incoming),
            "workers": self.forwarder is not None and self.forwarder.alive() and self.confirmer is not None and self.confirmer.alive(),
            "accepting": not self.draining.is_set(),
        }
        if self.settings.node.listener_process:
            checks["listener"] = self.listener is not None and self.listener.alive()
        return checks

    def _stop_listener(self) -> None:
        """Stop accepting and drain the associations in flight, here or in the listener process."""
        if self.server is not None:
            self.server.stop()
        if self.listener is not None:
            self.listener.stop()

    def drain(self) -> None:
        """Go not-ready first and wait ``node.drain_seconds``, so that a load balancer stops sending new associations here."""
        self.draining.set()
        if self.heartbeat is None or self.heartbeat.ports == {}:
            return  # never started: nothing is sending here
        self.heartbeat.draining()
        log.info("service.draining", action="service.draining", node=self.settings.node_id, seconds=self.settings.node.drain_seconds)
        self._stopped.wait(self.settings.node.drain_seconds)

    def stop(self) -> None:
        """Drain, stop accepting, finish the associations in flight, stop the workers, then close the ledger."""
        self.drain()
        if self.admin is not None:
            self.admin.stop()
        if self.probe is not None:
            self.probe.stop()
        self._stop_listener()
        for worker in (self.sweep, self.forwarder, self.confirmer):
            if worker is not None:
                worker.stop()
        if self.reference_archive is not None:
            self.reference_archive.stop()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.ledger is not None:
            self.ledger.audit(AuditEvent.SERVICE_STOPPED, actor=self.settings.node.ae_title)
        if self.audit_tasks is not None:
            # After service.stopped, so that the exporter gets the chance to deliver it.
            self.audit_tasks.stop()
        if self.ledger is not None:
            self.ledger.dispose()
