"""Socket tuning and DICOM TLS shared by every association, inbound and outbound.

Every outbound association goes through ``open_association``: a ``Peer`` with ``tls`` set is
reached over DICOM TLS (PS3.15 Annex B) with the guard's certificate, its certificate checked
against ``tls.ca_file`` and, when ``tls_fingerprint`` is set, against that pin.
"""

from __future__ import annotations

import gc
import socket
import threading
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from guard.config.settings import ArchiveSettings, SourceSettings
from guard.dicom import tls
from guard.domain.errors import ArchiveUnreachableError
from guard.runtime import tls as tls_contexts

#: Passes of the server loop (0.5 s each) between two garbage collections after associations, as pynetdicom counts.
_GC_PASSES = 60


class QuietAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, without a full garbage collection every 30 s when nothing happens.

    pynetdicom's ``service_actions`` runs a full ``gc.collect()`` on every 60th pass of the
    ``serve_forever`` loop, to reclaim finished association threads, whether or not any
    association came. In the guard's process a full collection costs hundreds of milliseconds
    of CPU (profiled: the largest share of an idle guard's CPU). Here, on the same schedule and
    only when a connection has been accepted since, the young generations are collected (where
    the finished associations' cycles are); the interpreter's own collector does the rest.
    """

    _accepted_since_gc = False
    _passes = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        """Note the connection, then serve it as pynetdicom does."""
        self._accepted_since_gc = True
        super().process_request(request, client_address)

    def service_actions(self) -> None:
        """Called by ``serve_forever`` on every pass: collect only after associations."""
        self._passes += 1
        if self._passes >= _GC_PASSES:
            self._passes = 0
            if self._accepted_since_gc:
                self._accepted_since_gc = False
                gc.collect(1)


def start_quiet_server(ae: AE, address: tuple[str, int], evt_handlers: list[Any], name: str) -> QuietAssociationServer:
    """``ae.start_server(address, block=False)`` with a ``QuietAssociationServer``, in a daemon thread named ``name``."""
    server = cast("QuietAssociationServer", ae.make_server(address, evt_handlers=evt_handlers, server_class=QuietAssociationServer))
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    # AE.start_server keeps its servers here, and the server's shutdown() removes itself again.
    ae._servers.append(server)  # noqa: SLF001 - the list AE.start_server itself appends to
    return server


def set_nodelay(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler: disable Nagle's algorithm on the association's socket.

    Without TCP_NODELAY each small C-STORE response waits for the peer's delayed ACK (about
    40 ms), which caps throughput near 20 instances/s.
    """
    dul_socket = getattr(event.assoc.dul, "socket", None)
    sock = getattr(dul_socket, "socket", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            return


NODELAY_HANDLER = (evt.EVT_CONN_OPEN, set_nodelay)


@dataclass(frozen=True)
class Peer:
    """Where and how to reach a DICOM peer."""

    ae_title: str
    host: str
    port: int
    tls: bool = False
    tls_fingerprint: str = ""


def archive_peer(archive: ArchiveSettings) -> Peer:
    """The archive as a peer; without a host, the built-in reference archive on this machine."""
    return Peer(archive.ae_title, archive.host or "127.0.0.1", archive.port, archive.tls, archive.tls_fingerprint)


def source_peer(source: SourceSettings, host: str | None = None) -> Peer:
    """A configured source as a peer, at ``host`` when given (e.g. the address it called from), else its own."""
    return Peer(source.ae_title, host or source.host, source.port, source.tls, source.tls_fingerprint)


def association_options(peer: Peer, handlers: list[Any]) -> dict[str, Any]:
    """Keyword arguments of ``AE.associate`` for ``peer``: its AE title and the socket tuning.

    The one place that says how an outbound association is made, used by ``open_association``
    and for the associations pynetdicom opens itself (C-MOVE sub-operations to a destination).
    A TLS peer gets the current client context (PS3.15 Annex B); its pin is checked by
    ``open_association``, or by the caller with ``tls.check_pin`` for associations it does not open.
    """
    options: dict[str, Any] = {"ae_title": peer.ae_title, "evt_handlers": [NODELAY_HANDLER, *handlers]}
    if peer.tls:
        options["tls_args"] = (tls_contexts.load().client, peer.host)
    return options


def open_association(ae: AE, peer: Peer, handlers: list[Any], **kwargs: Any) -> Association:
    """Associate with ``peer`` (TCP_NODELAY on); a peer that cannot be reached raises ``ArchiveUnreachableError``.

    The error type says "unreachable": retrying later may help, and the failure says nothing
    about any instance. Over TLS, a peer whose certificate is not the pinned one raises
    ``CertificatePinError`` after the association is aborted, before anything is sent on it.
    """
    assoc = ae.associate(peer.host, peer.port, **association_options(peer, handlers), **kwargs)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "could not be opened"
        over = " over TLS (check the certificates on both sides)" if peer.tls else ""
        msg = f"association to {peer.ae_title}@{peer.host}:{peer.port} {why}{over}"
        raise ArchiveUnreachableError(msg)
    if peer.tls and peer.tls_fingerprint:
        try:
            tls.check_pin(assoc, peer.ae_title, peer.tls_fingerprint)
        except tls.CertificatePinError:
            assoc.abort()
            raise
    return assoc
