"""The node's own row in the ledger: registered at start, a heartbeat with its readiness, stopped at the end."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import timedelta

import structlog

from guard import __version__
from guard.config.settings import Settings
from guard.domain.errors import LedgerError
from guard.ledger.ledger import Ledger
from guard.ledger.nodes import NodeInfo, heartbeat, mark_stopped, register_node

log = structlog.get_logger("guard.nodes")


class NodeHeartbeat:
    """Registers the node (refusing a second node on an SQLite ledger), then beats until stopped."""

    def __init__(self, settings: Settings, ledger: Ledger, ready: Callable[[], bool]) -> None:
        """Beat every ``node.heartbeat_seconds`` with ``ready()`` as the node's readiness."""
        self.settings = settings
        self.ledger = ledger
        self.node = settings.node_id
        self.ready = ready
        self.interval = settings.node.heartbeat_seconds
        self.state = "running"
        self.ports: dict[str, int | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self) -> NodeHeartbeat:
        """Record the start (``SingleNodeError`` when another node is alive on an SQLite ledger)."""
        info = NodeInfo(node=self.node, ae_title=self.settings.node.ae_title, version=__version__, pid=os.getpid())
        register_node(self.ledger, info, timedelta(seconds=self.interval))
        return self

    def start(self, **ports: int | None) -> NodeHeartbeat:
        """Beat now with the ports bound (``dicom_port``, ``http_port``), then in a daemon thread."""
        self.ports = ports
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="node-heartbeat", daemon=True)
        self._thread.start()
        return self

    def beat(self) -> None:
        """One heartbeat; a ledger that cannot be reached is logged (the next beat tries again)."""
        try:
            heartbeat(self.ledger, self.node, ready=self.ready(), state=self.state, **self.ports)
        except LedgerError:
            log.warning("node.heartbeat_failed", action="node.heartbeat_failed", node=self.node)

    def draining(self) -> None:
        """Tell the other nodes (and status readers) that this node is draining."""
        self.state = "draining"
        self.beat()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        """Stop beating and record the clean stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)
        try:
            mark_stopped(self.ledger, self.node)
        except LedgerError:
            log.warning("node.stop_unrecorded", action="node.stop_unrecorded", node=self.node)
