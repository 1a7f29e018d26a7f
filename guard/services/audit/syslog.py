"""Sending DICOM audit messages to a syslog collector as RFC 5424 messages.

Transports: TLS (RFC 5425), TCP with octet-counting framing (RFC 6587), or UDP (RFC 5426).

Syslog over TCP has no acknowledgement, so a batch counts as delivered only when the
collector's TCP stack has acknowledged every byte (the socket's send queue is empty) and the
connection is still open; otherwise the caller sends the batch again on a new connection.
A collector that drops messages it has acknowledged at TCP level (for example by crashing
before writing them) can still lose them: that is a limit of the protocol, not of the guard.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import ssl
import struct
import termios
import time
from datetime import UTC, datetime

from guard.config.settings import AuditSettings, SyslogProtocol

#: facility 10 (security/authorization), severity 5 (notice), as IHE ATNA asks.
PRI = 10 * 8 + 5
MSGID = "IHE+RFC-3881"
_BOM = b"\xef\xbb\xbf"


def _header_field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters, ``-`` when empty."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def _timestamp(at: str | None) -> str:
    if not at:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    parsed = datetime.fromisoformat(at)
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc5424(
    xml: str, *, at: str | None, hostname: str, seq: int | None = None, app_name: str = "guard", procid: str | None = None
) -> bytes:
    """One RFC 5424 message carrying ``xml`` (UTF-8 with a BOM, as the RFC asks for UTF-8 MSG).

    ``seq``, the audit record's sequence number, goes into the registered ``meta`` structured
    data element as ``sequenceId`` (RFC 5424 7.3.1), so a collector can spot gaps and repeats.
    """
    header = " ".join(
        (
            f"<{PRI}>1",
            _timestamp(at),
            _header_field(hostname, 255),
            _header_field(app_name, 48),
            _header_field(procid or str(os.getpid()), 128),
            MSGID,
            f'[meta sequenceId="{seq}"]' if seq is not None and 0 < seq < 2**31 else "-",
        )
    )
    return header.encode("ascii") + b" " + _BOM + xml.encode("utf-8")


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 / RFC 5425 framing: the length in decimal, a space, the message."""
    return str(len(message)).encode("ascii") + b" " + message


class SyslogSender:
    """One connection to the collector, opened on demand and dropped on any doubt."""

    def __init__(self, settings: AuditSettings, *, timeout: float = 10.0) -> None:
        """Send to the collector of ``settings``; ``timeout`` bounds connecting and delivery."""
        self.settings = settings
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.settings.syslog_ca_file) if self.settings.syslog_ca_file else None
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.settings.syslog_certificate is not None and self.settings.syslog_private_key is not None:
            ctx.load_cert_chain(str(self.settings.syslog_certificate), str(self.settings.syslog_private_key))
        return ctx

    def _connect(self) -> socket.socket:
        host, port = self.settings.syslog_host, self.settings.syslog_port
        if self.settings.syslog_protocol is SyslogProtocol.UDP:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect((host, port))
            return sock
        raw = socket.create_connection((host, port), timeout=self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.settings.syslog_protocol is SyslogProtocol.TLS:
            return self._tls_context().wrap_socket(raw, server_hostname=host)
        return raw

    def _closed_by_peer(self, sock: socket.socket) -> bool:
        """A collector never sends anything: a readable socket means it closed (or reset) the connection."""
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) or bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

    def _acknowledged(self, sock: socket.socket) -> None:
        """Wait until the collector's TCP stack has acknowledged every byte sent, or raise."""
        deadline = time.monotonic() + self.timeout
        while True:
            if self._closed_by_peer(sock):
                msg = "the collector closed the connection before acknowledging the batch"
                raise ConnectionError(msg)
            unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            if unsent == 0:
                return
            if time.monotonic() > deadline:
                msg = f"the collector did not acknowledge {unsent} byte(s) within {self.timeout} s"
                raise TimeoutError(msg)
            time.sleep(0.002)

    def send(self, messages: list[bytes]) -> None:
        """Deliver ``messages`` (RFC 5424, unframed), or raise ``OSError``: then none counts as delivered."""
        if not messages:
            return
        try:
            if self._sock is not None and self.settings.syslog_protocol is not SyslogProtocol.UDP and self._closed_by_peer(self._sock):
                self.close()
            if self._sock is None:
                self._sock = self._connect()
            sock = self._sock
            if self.settings.syslog_protocol is SyslogProtocol.UDP:
                for message in messages:
                    sock.send(message)
                return
            sock.sendall(b"".join(octet_counted(m) for m in messages))
            self._acknowledged(sock)
        except (OSError, ValueError):
            self.close()
            raise

    def close(self) -> None:
        """Drop the connection (the next send opens a new one)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
