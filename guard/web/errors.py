"""How the outcomes of HTTP requests to the archive become ``PeerError``s: the one seam.

- no connection, a redirect, 401/403 (credentials refused), 404 on a service URL (wrong
  ``archive.url``), 429, 502, 503, 504: ``ArchiveUnreachableError``: about the archive, never
  about an instance; forwarding backs off without counting it against the instance;
- a timeout or a broken connection after the request went out, 408, other 5xx: ``TransientPeerError``;
- any other 4xx: ``PermanentPeerError``.
"""

from __future__ import annotations

from typing import Any

import httpx

from guard.domain.errors import ArchiveUnreachableError, PeerError, PermanentPeerError, TransientPeerError

UNREACHABLE_STATUSES = frozenset({401, 403, 429, 502, 503, 504})


def peer_error(exc: httpx.HTTPError, what: str, base: str) -> PeerError:
    """The ``PeerError`` for an httpx failure of ``what`` (no HTTP status)."""
    detail = f"{what} to {base} failed: {exc.__class__.__name__}: {exc}"
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol, httpx.ProxyError)):
        return ArchiveUnreachableError(detail)
    # The request may have gone out: the outcome is unknown, and sending again is harmless.
    return TransientPeerError(detail)


def status_error(code: int, what: str, base: str, reason: str = "") -> PeerError:
    """The ``PeerError`` for an HTTP failure status ``code`` answered to ``what``."""
    detail = f"{what} to {base} answered HTTP {code}" + (f" {reason}" if reason else "")
    if code in {401, 403}:
        return ArchiveUnreachableError(f"{detail}: the archive refused the credentials (check archive.auth and its file)")
    if 300 <= code < 400:
        return ArchiveUnreachableError(f"{detail}: a redirect; set archive.url to the address the archive serves at")
    if code == 404:
        return ArchiveUnreachableError(f"{detail}: no DICOMweb service there (check archive.url)")
    if code in UNREACHABLE_STATUSES:
        return ArchiveUnreachableError(detail)
    if code == 408 or code >= 500:
        return TransientPeerError(detail)
    return PermanentPeerError(detail)


def check_response(response: httpx.Response, what: str, base: str) -> None:
    """Raise the ``PeerError`` of a response that is not 2xx."""
    if not response.is_success:
        raise status_error(response.status_code, what, base, response.reason_phrase)


def json_body(response: httpx.Response, what: str) -> Any:
    """The decoded DICOM JSON of a response; None when it has no content."""
    if response.status_code == 204 or not response.content:  # QIDO-RS: 204 No Content means no match
        return None
    try:
        return response.json()
    except ValueError as exc:
        msg = f"{what}: the archive's answer is not DICOM JSON: {exc}"
        raise PermanentPeerError(msg) from exc
