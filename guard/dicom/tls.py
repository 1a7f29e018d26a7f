"""DICOM TLS (PS3.15 Annex B): certificates from files, mutual authentication, pinning, reload.

- **Contexts.** One server and one client ``ssl.SSLContext``, both built from ``[tls]``: the
  guard's certificate and key, the CA file peers' certificates must chain to, TLS 1.2 or later.
  Client certificates are always required on the TLS listener (mutual authentication). Host
  names are not checked unless ``tls.verify_hostname``: DICOM peers are addressed by IP as
  often as by name, and pinning binds a certificate to an AE title instead.
- **Process-wide state** (the only TLS state, owned here): ``configure`` records the settings;
  the contexts are built on first use, so a command that never talks TLS never reads a key;
  ``reload`` builds fresh contexts from the files and swaps them in only when both load, so a
  half-written certificate on SIGHUP leaves the guard serving with the previous one.
- **The listener.** ``TlsAssociationServer`` does the handshake on the association's own thread
  with a deadline (pynetdicom's own server does it in the accept loop, where one silent client
  would block every other), and reports every refused handshake (no client certificate, one
  from another CA, not TLS at all, too old a version, too slow) to a callback that audits it.
- **Per-peer policy.** ``inbound_refusal`` decides, for an association request, whether a peer
  configured with ``tls = true`` came over TLS and whether its certificate matches its pinned
  SHA-256 fingerprint; ``check_pin`` does the same for an outbound association.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from pynetdicom.transport import ThreadedAssociationServer

from guard.dicom.limits import LimitedAssociationServer, LimitedRequestHandler, Limits
from guard.errors import ArchiveUnreachableError, ConfigError
from guard.throttle import Reporter

if TYPE_CHECKING:
    from pynetdicom import AE

    from guard.config import Settings, TlsSettings

#: Called with (peer address, reason code, technical detail) when a TLS handshake is refused.
RefusalCallback = Callable[[str, str, str], None]

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsConfigError(ConfigError):
    """The TLS certificate, key or CA file cannot be used."""


class CertificatePinError(ArchiveUnreachableError):
    """The peer presented a certificate other than the one pinned to its AE title (no association: nothing is known of any instance)."""


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lower-case hex (what ``tls_fingerprint`` holds)."""
    return hashlib.sha256(der).hexdigest()


def _load(ctx: ssl.SSLContext, tls: TlsSettings) -> ssl.SSLContext:
    if not tls.configured:
        msg = "DICOM TLS needs tls.certificate, tls.private_key and tls.ca_file"
        raise TlsConfigError(msg)
    ctx.minimum_version = _VERSIONS[tls.min_version.value]
    try:
        ctx.load_cert_chain(str(tls.certificate), str(tls.private_key))
    except (OSError, ssl.SSLError) as exc:
        msg = f"cannot load tls.certificate {tls.certificate} with tls.private_key {tls.private_key}: {exc}"
        raise TlsConfigError(msg) from exc
    try:
        ctx.load_verify_locations(cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        msg = f"cannot load tls.ca_file {tls.ca_file}: {exc}"
        raise TlsConfigError(msg) from exc
    return ctx


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """The listener's context: client certificates required and checked against the CA file."""
    ctx = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), tls)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """The context of outbound associations: the guard's certificate offered, the peer's checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = tls.verify_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return _load(ctx, tls)


def certificate_sha256(tls: TlsSettings) -> str:
    """Fingerprint of the guard's own certificate (the first in the file), for the audit record of a load."""
    if tls.certificate is None:
        return ""
    try:
        der = ssl.PEM_cert_to_DER_cert(tls.certificate.read_text(encoding="ascii"))
    except (OSError, ValueError) as exc:
        msg = f"cannot read tls.certificate {tls.certificate}: {exc}"
        raise TlsConfigError(msg) from exc
    return fingerprint(der)


@dataclass(frozen=True)
class Contexts:
    """A matching pair of contexts built from one reading of the files."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    certificate_sha256: str


class _State:
    """The process's TLS settings and the contexts built from them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: TlsSettings | None = None
        self.contexts: Contexts | None = None


_state = _State()


def _build(tls: TlsSettings) -> Contexts:
    return Contexts(server_context(tls), client_context(tls), certificate_sha256(tls))


def configure(tls: TlsSettings) -> None:
    """Use ``tls`` from now on; the files are read at first use (or by ``load``)."""
    with _state.lock:
        _state.settings = tls
        _state.contexts = None


def load() -> Contexts:
    """The current contexts, built now if not yet built; ``TlsConfigError`` if they cannot be."""
    with _state.lock:
        if _state.contexts is None:
            if _state.settings is None:
                msg = "DICOM TLS is not configured in this process"
                raise TlsConfigError(msg)
            _state.contexts = _build(_state.settings)
        return _state.contexts


def reload() -> Contexts:
    """Read the files again and swap the new contexts in; on any error keep the old ones and raise."""
    with _state.lock:
        if _state.settings is None:
            msg = "DICOM TLS is not configured in this process"
            raise TlsConfigError(msg)
        fresh = _build(_state.settings)
        _state.contexts = fresh
        return fresh


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


# -- the listener ---------------------------------------------------------------------------


def handshake_reason(exc: BaseException) -> str:
    """A stable reason code for a refused handshake, for the audit record."""
    if isinstance(exc, TimeoutError):
        return "handshake-timeout"
    reason = str(getattr(exc, "reason", "") or "").upper()
    text = str(exc).upper()
    table = (
        ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "no-client-certificate"),
        ("CERTIFICATE_REQUIRED", "no-client-certificate"),
        ("CERTIFICATE_VERIFY_FAILED", "untrusted-client-certificate"),
        ("UNKNOWN_CA", "untrusted-client-certificate"),
        ("BAD_CERTIFICATE", "untrusted-client-certificate"),
        ("UNSUPPORTED_PROTOCOL", "tls-version-not-allowed"),
        ("PROTOCOL_VERSION", "tls-version-not-allowed"),
        ("WRONG_VERSION_NUMBER", "not-tls"),
        ("HTTP_REQUEST", "not-tls"),
        ("RECORD_LAYER_FAILURE", "not-tls"),
    )
    for needle, code in table:
        if needle in reason or needle in text:
            return code
    return "handshake-failed" if isinstance(exc, ssl.SSLError) else "handshake-aborted"


class TlsAssociationServer(LimitedAssociationServer):
    """A pynetdicom association server whose connections are TLS, handshaken on their own thread, within the listener limits."""

    def __init__(  # noqa: PLR0913 - pynetdicom's server signature, plus the handshake settings
        self,
        ae: AE,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[Any],
        ssl_context: ssl.SSLContext | None = None,  # noqa: ARG002 - pynetdicom passes it; the current context is used instead
        evt_handlers: list[Any] | None = None,
        request_handler: Any = None,
        *,
        handshake_timeout: float,
        on_refused: RefusalCallback,
    ) -> None:
        """Listen on ``address``; each connection gets ``handshake_timeout`` seconds to finish its handshake."""
        # No ssl_context for the base class: its get_request would handshake in the accept loop.
        super().__init__(ae, address, ae_title, contexts, None, evt_handlers, request_handler)
        self.handshake_timeout = handshake_timeout
        self.on_refused = on_refused

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handshake (bounded), then serve the association as pynetdicom would; refusals are reported."""
        raw: socket.socket = request
        address = str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)
        release = self.connection_release(raw)  # the wrapper takes the socket over; a failed handshake must not leave it counted
        try:
            raw.settimeout(self.handshake_timeout)
            wrapped = load().server.wrap_socket(raw, server_side=True)
            wrapped.settimeout(None)
        except (OSError, ssl.SSLError, TlsConfigError) as exc:
            self.shutdown_request(raw)
            release()
            self.on_refused(address, handshake_reason(exc), str(exc)[:300])
            return
        super().process_request_thread(wrapped, client_address)


def start_tls_server(
    ae: AE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    *,
    handshake_timeout: float,
    on_refused: RefusalCallback,
    limits: Limits,
    report_refusal: Reporter,
    report_violation: Reporter,
) -> ThreadedAssociationServer:
    """Start a TLS listener for ``ae`` on ``address`` in a daemon thread (as ``AE.start_server`` does), with ``limits``."""
    load()  # fail now, with the file named, rather than at the first connection
    server = cast(
        "TlsAssociationServer",
        ae.make_server(
            address,
            evt_handlers=evt_handlers,
            server_class=TlsAssociationServer,
            request_handler=LimitedRequestHandler,
            handshake_timeout=handshake_timeout,
            on_refused=on_refused,
        ),
    )
    server.setup_limits(limits, report_refusal, report_violation)
    thread = threading.Thread(target=server.serve_forever, name="dicom-tls-acceptor", daemon=True)
    thread.start()
    # AE.start_server keeps its servers here, and the server's shutdown() removes itself again.
    ae._servers.append(server)  # noqa: SLF001 - the list AE.start_server itself appends to
    return server
