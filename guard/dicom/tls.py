"""DICOM TLS policy per peer (PS3.15 Annex B): whether a peer came over TLS, and certificate pins.

- ``inbound_refusal`` decides, for an association request, whether a peer configured with
  ``tls = true`` came over TLS and whether its certificate matches its pinned SHA-256
  fingerprint; ``check_pin`` does the same for an outbound association.
- The contexts themselves are process-wide state, owned by ``guard.runtime.tls``.
"""

from __future__ import annotations

import socket
import ssl
from typing import TYPE_CHECKING, Any

from guard.domain.errors import ArchiveUnreachableError
from guard.runtime.tls import fingerprint

if TYPE_CHECKING:
    from guard.config.settings import Settings


class CertificatePinError(ArchiveUnreachableError):
    """The peer presented a certificate other than the one pinned to its AE title (no association: nothing is known of any instance)."""


def in_use(settings: Settings) -> bool:
    """Whether anything in ``settings`` needs DICOM TLS (a TLS listener or a peer with ``tls = true``)."""
    sources = any(s.tls for s in settings.sources) or any(d.tls for d in settings.destinations)
    return bool(settings.tls.port) or settings.archive.tls or sources


# -- per-peer policy ------------------------------------------------------------------------


def _socket_of(assoc: Any) -> socket.socket | None:
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    return sock if isinstance(sock, socket.socket) else None


def peer_certificate_sha256(assoc: Any) -> str | None:
    """Fingerprint of the certificate the remote end of ``assoc`` presented; None when not over TLS."""
    sock = _socket_of(assoc)
    if not isinstance(sock, ssl.SSLSocket):
        return None
    der = sock.getpeercert(binary_form=True)
    return fingerprint(der) if der else None


def inbound_refusal(settings: Settings, calling_ae: str, assoc: Any) -> tuple[str, dict[str, str]] | None:
    """Why an association request breaks the TLS policy of its calling AE (reason, detail), or None.

    ``tls-required``: the peer is configured with ``tls = true`` but came to the plain listener.
    ``certificate-pin-mismatch``: it presented a certificate other than its ``tls_fingerprint``.
    """
    calling = calling_ae.strip()
    source = settings.source(calling)
    peer = source if source is not None else settings.archive if calling == settings.archive.ae_title else None
    if peer is None:
        return None
    over_tls = isinstance(_socket_of(assoc), ssl.SSLSocket)
    if peer.tls and not over_tls:
        return "tls-required", {}
    if over_tls and peer.tls_fingerprint:
        presented = peer_certificate_sha256(assoc) or ""
        if presented != peer.tls_fingerprint:
            return "certificate-pin-mismatch", {"certificate_sha256": presented, "pinned_sha256": peer.tls_fingerprint}
    return None


def check_pin(assoc: Any, ae_title: str, pinned: str) -> None:
    """Raise ``CertificatePinError`` unless the remote certificate of ``assoc`` is the pinned one."""
    presented = peer_certificate_sha256(assoc)
    if presented != pinned:
        msg = f"{ae_title} presented certificate sha256 {presented or 'none'}, pinned {pinned}"
        raise CertificatePinError(msg)
