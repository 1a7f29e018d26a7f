"""The TLS listener: handshakes on the association's own thread, within the listener limits.

``TlsAssociationServer`` does the handshake on the association's own thread with a deadline
(pynetdicom's own server does it in the accept loop, where one silent client would block
every other), and reports every refused handshake (no client certificate, one from another
CA, not TLS at all, too old a version, too slow) to a callback that audits it.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from pynetdicom.transport import ThreadedAssociationServer

from guard.domain.throttle import Reporter
from guard.listener.limits import LimitedAssociationServer, LimitedRequestHandler, Limits
from guard.runtime.tls import TlsConfigError, load

if TYPE_CHECKING:
    from pynetdicom import AE

#: Called with (peer address, reason code, technical detail) when a TLS handshake is refused.
RefusalCallback = Callable[[str, str, str], None]


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
        connection: socket.socket = raw
        try:
            raw.settimeout(self.handshake_timeout)
            # The handshake apart from the wrapping: a wrapper that handshakes itself closes the
            # connection when the handshake fails, before the refusal below is counted and audited.
            connection = load().server.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            connection.do_handshake()
            connection.settimeout(None)
        except (OSError, ssl.SSLError, TlsConfigError) as exc:
            # Counted off and audited before the connection closes: a peer that sees the close and
            # connects again is not refused for a pending connection this one no longer is.
            release()
            try:
                self.on_refused(address, handshake_reason(exc), str(exc)[:300])
            finally:
                self.shutdown_request(connection)
            return
        super().process_request_thread(connection, client_address)


def start_tls_server(  # noqa: PLR0913 - pynetdicom's server arguments, plus the handshake settings and the limits
    ae: AE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    *,
    handshake_timeout: float,
    on_refused: RefusalCallback,
    limits: Limits,
    report_refusal: Reporter,
    report_violation: Reporter,
    contexts: list[Any] | None = None,
) -> ThreadedAssociationServer:
    """Start a TLS listener for ``ae`` on ``address`` in a daemon thread (as ``AE.start_server`` does), with ``limits``.

    ``contexts``: the supported presentation contexts (the AE's when None).
    """
    load()  # fail now, with the file named, rather than at the first connection
    server = cast(
        "TlsAssociationServer",
        ae.make_server(
            address,
            contexts=contexts,
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
