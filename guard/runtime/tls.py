"""DICOM TLS contexts (PS3.15 Annex B): the process's only TLS state, owned here.

One server and one client ``ssl.SSLContext``, both built from ``[tls]``: the guard's
certificate and key, the CA file peers' certificates must chain to, TLS 1.2 or later. Client
certificates are always required on the TLS listener (mutual authentication). Host names are
not checked unless ``tls.verify_hostname``: DICOM peers are addressed by IP as often as by
name, and pinning binds a certificate to an AE title instead.

``configure`` records the settings; the contexts are built on first use, so a command that
never talks TLS never reads a key; ``reload`` builds fresh contexts from the files and swaps
them in only when both load, so a half-written certificate on SIGHUP leaves the guard serving
with the previous one.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from guard.domain.errors import ConfigError

if TYPE_CHECKING:
    from guard.config.settings import TlsSettings

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsConfigError(ConfigError):
    """The TLS certificate, key or CA file cannot be used."""


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
