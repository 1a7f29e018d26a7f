"""Is the archive reachable? A C-ECHO (or, for a DICOMweb archive, an HTTP query) now and then, its last answer cached.

The status page and ``/metrics`` show the archive's reachability without opening an
association per page view: ``ArchiveProbe`` sends one C-ECHO (Verification SOP Class, PS3.7
9.1.5) every ``archive.probe_interval`` seconds from a daemon thread and keeps the last
outcome; given another ``ping`` (the DICOMweb archive's QIDO-RS query) it calls that instead.
A probe that fails says only that the archive could not be reached *then*; it is information
for a person, never evidence for or against a delete (the delete gate asks the
archive itself, live).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from guard.config.settings import Settings
from guard.dicom import conversation
from guard.dicom.net import Peer, archive_peer
from guard.domain.errors import PeerError
from guard.runtime.metrics import ARCHIVE_ECHO_SECONDS, ARCHIVE_REACHABLE

log = structlog.get_logger("guard.probe")


@dataclass(frozen=True)
class Reachability:
    """The outcome of one probe."""

    reachable: bool
    checked_at: str
    peer: str
    latency_ms: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


#: A probe: returns when the archive answered as it should, raises a ``PeerError`` otherwise.
Ping = Callable[[float], None]


def check(ping: Ping, where: str, timeout: float) -> Reachability:
    """Call ``ping`` once: reachable only when it returns."""
    started = time.monotonic()
    now = datetime.now(UTC).isoformat()
    try:
        ping(timeout)
    except PeerError as exc:
        return Reachability(reachable=False, checked_at=now, peer=where, error=str(exc))
    return Reachability(reachable=True, checked_at=now, peer=where, latency_ms=round((time.monotonic() - started) * 1000, 1))


def echo_ping(own_ae: str, peer: Peer) -> Ping:
    """The C-ECHO probe of ``peer``: Success (0x0000) on an association of its own."""

    def ping(timeout: float) -> None:
        conversation.echo(conversation.outbound_ae(own_ae, timeout, [Verification]), peer)

    return ping


def echo(own_ae: str, peer: Peer, timeout: float) -> Reachability:
    """One C-ECHO to ``peer``: reachable only when the association opens and the answer is Success (0x0000)."""
    return check(echo_ping(own_ae, peer), f"{peer.ae_title}@{peer.host}:{peer.port}", timeout)


class ArchiveProbe:
    """Probe the archive every ``interval`` seconds from a daemon thread; ``last`` is the latest outcome."""

    def __init__(self, settings: Settings, ping: Ping | None = None, where: str | None = None) -> None:
        """Probe the archive of ``settings`` with ``ping`` (described as ``where``); by default a C-ECHO as ``node.ae_title``."""
        peer = archive_peer(settings.archive)
        self.ping = ping or echo_ping(settings.node.ae_title, peer)
        self.where = where or f"{peer.ae_title}@{peer.host}:{peer.port}"
        self.interval = settings.archive.probe_interval
        self.timeout = min(settings.forward.timeout, 10.0)
        self._last: Reachability | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def last(self) -> Reachability | None:
        """The latest outcome; None before the first probe (or when probing is off)."""
        with self._lock:
            return self._last

    def probe_now(self) -> Reachability:
        """Probe once, remember and publish the outcome; logs a change of reachability."""
        try:
            outcome = check(self.ping, self.where, self.timeout)
        except Exception as exc:  # noqa: BLE001 - the probe's boundary: whatever pynetdicom or httpx raised means "not reachable"
            outcome = Reachability(reachable=False, checked_at=datetime.now(UTC).isoformat(), peer=self.where, error=repr(exc)[:300])
        with self._lock:
            before, self._last = self._last, outcome
        ARCHIVE_REACHABLE.set(1 if outcome.reachable else 0)
        if outcome.latency_ms is not None:
            ARCHIVE_ECHO_SECONDS.set(outcome.latency_ms / 1000)
        if before is None or before.reachable != outcome.reachable:
            level = log.info if outcome.reachable else log.warning
            level(
                "archive.reachability", action="archive.reachability", reachable=outcome.reachable, peer=outcome.peer, error=outcome.error
            )
        return outcome

    def start(self) -> ArchiveProbe:
        """Start probing (no thread when ``archive.probe_interval`` is 0)."""
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="archive-probe", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe_now()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Stop probing; waits for a probe in flight (bounded by its timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout * 3 + 1)
            self._thread = None
