"""The composition of a listener process (``guard listener``, started by the main process only).

It builds what receiving needs and nothing else: the spool, the ledger (already migrated by the
main process), the ingest service, the delete gate for IOCM rejection notes, the confirmer's
handlers for Storage Commitment requests and reports (its loops run in the main process), the
query/retrieve relay and the DICOM listener. See ``guard.app.listener_process``.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from typing import NoReturn

import structlog

from guard import runtime
from guard.app.listener_moves import MovesOfMain, decode, listener_registry
from guard.app.listener_process import HEARTBEAT, ChildChannel, die_with_parent, parent_alive
from guard.config.settings import Settings
from guard.dicom import tls
from guard.ledger.db import attach_ledger
from guard.ledger.ledger import Ledger
from guard.listener.server import DRAIN_TIMEOUT, IngestServer
from guard.runtime import tls as tls_contexts
from guard.services.confirm.confirmer import Confirmer
from guard.services.delete.gate import DeleteGate
from guard.services.ingest import IngestService
from guard.services.qr.relay import QueryRetrieveRelay
from guard.spool import Spool
from guard.web.backends import make_backend

log = structlog.get_logger("guard.app.listener_child")

#: Seconds a new listener waits for its ports to be released by a previous one.
BIND_WAIT = 30.0
#: Seconds beyond the drain time a stopping listener gets to close the ledger before it is ended.
STOP_GRACE = 10.0


class ListenerChild:
    """The listener and the services it calls, in a process of their own."""

    def __init__(self, settings: Settings, channel: ChildChannel, parent_pid: int) -> None:
        """Serve ``settings``; report on ``channel`` to the main process ``parent_pid``."""
        self.settings = settings
        self.channel = channel
        self.parent_pid = parent_pid
        self.ledger: Ledger | None = None
        self.server: IngestServer | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Open the ledger and the listening ports, then tell the main process the port."""
        die_with_parent()
        spool = Spool(self.settings.spool_dir)
        spool.prepare()
        runtime.configure_dicom(spool.incoming, self.settings.node.max_dataset_size)
        tls_contexts.configure(self.settings.tls)
        if tls.in_use(self.settings):
            tls_contexts.load()
        # Migrated by the main process; opened as it opens it, so each receipt and audit record names this node.
        ledger = self.ledger = attach_ledger(self.settings)
        gate = DeleteGate(self.settings, ledger, make_backend(self.settings.delete))
        confirmer = Confirmer(
            self.settings,
            ledger,
            spool,
            wake_loops=lambda: self.channel.send("confirm"),
            observe_latency=lambda seconds: self.channel.send(f"latency {seconds:.6f}"),
        )
        ingest = IngestService(self.settings, ledger, spool, on_received=lambda: self.channel.send("received"), gate=gate)
        relays = listener_registry()
        self.server = IngestServer(self.settings, ingest, confirmer, QueryRetrieveRelay(self.settings, ledger, relays))
        self._bind(self.server)
        # Before the port is told: the main process then announces the byte checks' moves in flight.
        moves = MovesOfMain(relays, self.channel.send_within)
        threading.Thread(target=self._hear_main, args=(moves,), name="listener-moves", daemon=True).start()
        self.channel.send(f"port {self.server.port}")
        log.info("listener.serving", action="listener.serving", port=self.server.port)

    def _hear_main(self, moves: MovesOfMain) -> None:
        """Apply the main process's messages (the byte checks' moves) until the process stops."""
        while not self._stop.is_set():
            try:
                text = self.channel.receive(HEARTBEAT)
            except (OSError, ValueError):
                return  # the channel is closed (ValueError: select on a closed socket): the process is stopping
            message = None if text is None else decode(text)
            if message is not None:
                moves.handle(message)

    def _bind(self, server: IngestServer) -> None:
        """Open the ports, waiting (bounded) while a previous listener process still holds them.

        A listener whose main process was killed drains and closes its ports on SIGTERM; a new
        guard started at once must not fail for want of the port during those seconds.
        """
        deadline = time.monotonic() + BIND_WAIT
        while True:
            try:
                server.start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise
                log.info("listener.port_busy", action="listener.port_busy", port=self.settings.node.port)
                server.stop(drain_timeout=0)
                time.sleep(0.2)
                continue
            return

    def run(self) -> None:
        """Send heartbeats until asked to stop or the main process is gone."""
        while not self._stop.wait(HEARTBEAT):
            if not parent_alive(self.parent_pid):
                log.warning("listener.orphaned", action="listener.orphaned", parent_pid=self.parent_pid)
                break
            self.channel.send("alive")

    def request_stop(self) -> None:
        """Stop the heartbeat loop (from a signal handler)."""
        self._stop.set()

    def reload_certificates(self) -> None:
        """SIGHUP: read the DICOM TLS files again (the main process audits the reload)."""
        if tls.in_use(self.settings):
            try:
                tls_contexts.reload()
            except tls_contexts.TlsConfigError as exc:
                log.exception("tls.reload_failed", action="tls.reload_failed", error=str(exc))

    def stop_and_exit(self) -> NoReturn:
        """Stop (bounded), then end the process at once, whatever threads are left.

        pynetdicom's DUL threads are not daemon threads: one whose association never winds down
        (a peer that neither answers nor closes) would keep the interpreter from exiting, and an
        orphaned listener holding the port keeps the next guard from starting. Every instance this
        process acknowledged is already durable, so nothing is lost by not waiting for them.
        """
        watchdog = threading.Timer(DRAIN_TIMEOUT + STOP_GRACE, os._exit, args=(1,))
        watchdog.daemon = True
        watchdog.start()
        self.stop()
        log.info("listener.stopped", action="listener.stopped")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def stop(self) -> None:
        """Drain and close the listener, then the ledger."""
        if self.server is not None:
            self.server.stop()
        if self.ledger is not None:
            self.ledger.dispose()
        self.channel.close()
