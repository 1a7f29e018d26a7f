"""Socket tuning shared by every association, inbound and outbound."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association

from guard.config import ArchiveSettings
from guard.errors import ArchiveUnreachableError


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


def archive_peer(archive: ArchiveSettings) -> Peer:
    """The archive as a peer; without a host, the built-in reference archive on this machine."""
    return Peer(archive.ae_title, archive.host or "127.0.0.1", archive.port)


def open_association(ae: AE, peer: Peer, handlers: list[Any], **kwargs: Any) -> Association:
    """Associate with ``peer`` (TCP_NODELAY on); a peer that cannot be reached raises ``ArchiveUnreachableError``.

    The error type says "unreachable": retrying later may help, and the failure says nothing
    about any instance.
    """
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, evt_handlers=[NODELAY_HANDLER, *handlers], **kwargs)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "could not be opened"
        msg = f"association to {peer.ae_title}@{peer.host}:{peer.port} {why}"
        raise ArchiveUnreachableError(msg)
    return assoc
