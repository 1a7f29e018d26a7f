"""STOW-RS (PS3.18 10.5): forwarding one spooled instance per request, streamed from the spool.

``StowSender`` is the DICOMweb counterpart of the DIMSE sender the forwarding workers use
(``send(path, sop_class_uid, transfer_syntax) -> status``, ``close()``): one HTTP client per
worker, kept alive between requests, one instance per request so that every outcome belongs
to exactly one instance. The body is a multipart/related stream of the spool file's bytes
(``guard.web.multipart``): the file is never read into memory whole.

``stow_outcome`` reads the Store Instances Response (PS3.18 10.5.3): a Failed SOP Sequence
(0008,1198) item's Failure Reason (0008,1197) decides like a C-STORE status
(``guard.domain.status.is_transient``: 0xA7xx, 0x0110, 0x0213 retried; others dead-lettered);
a Referenced SOP Sequence (0008,1199) item means stored, with its Warning Reason (0008,1196)
as the status; without either, the HTTP status decides (``guard.web.errors``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx

from guard.domain import status as st
from guard.domain.errors import PermanentPeerError, TransientPeerError
from guard.web.errors import UNREACHABLE_STATUSES, json_body, peer_error, status_error
from guard.web.multipart import DICOM_JSON, related_body

WHAT = "STOW-RS StoreInstances"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"


def _items(body: object, tag: str) -> list[dict[str, object]]:
    element = body.get(tag) if isinstance(body, dict) else None
    values = element.get("Value") if isinstance(element, dict) else None
    return [item for item in values if isinstance(item, dict)] if isinstance(values, list) else []


def _us(item: dict[str, object], tag: str) -> int | None:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    if isinstance(values, list) and values and isinstance(values[0], int):
        return values[0]
    return None


def stow_outcome(code: int, body: object, base: str) -> int:
    """The status of one instance stored alone by a request answered ``code`` with ``body``; a failure raises.

    Returns 0x0000 or the Warning Reason; raises ``ArchiveUnreachableError``,
    ``TransientPeerError`` or ``PermanentPeerError`` (the error's ``status`` is the Failure Reason).
    """
    if code in UNREACHABLE_STATUSES or code == 404 or 300 <= code < 400:
        raise status_error(code, WHAT, base)
    failed = _items(body, FAILED_SOP_SEQUENCE)
    if failed:
        reason = _us(failed[0], FAILURE_REASON)
        if reason is None:
            raise status_error(code if code >= 400 else 409, WHAT, base, "with a Failed SOP Sequence item without a Failure Reason")
        detail = f"{WHAT} to {base} failed the instance with Failure Reason 0x{reason:04X} ({st.describe(reason)}), HTTP {code}"
        if st.is_transient(reason):
            raise TransientPeerError(detail, status=reason)
        raise PermanentPeerError(detail, status=reason)
    if 200 <= code < 300:
        stored = _items(body, REFERENCED_SOP_SEQUENCE)
        warning = _us(stored[0], WARNING_REASON) if stored else None
        return warning if warning is not None and st.is_success(warning) else st.SUCCESS
    raise status_error(code, WHAT, base)


class StowSender:
    """STOW-RS towards the archive, one instance per request, over one kept-alive HTTP client."""

    def __init__(self, client_factory: Callable[[], httpx.Client], base: str) -> None:
        """Open clients with ``client_factory`` (when needed) to the DICOMweb service at ``base``."""
        self._client_factory = client_factory
        self.base = base
        self._client: httpx.Client | None = None

    def send(self, path: Path, sop_class_uid: str, transfer_syntax: str) -> int:  # noqa: ARG002 - the archive reads both from the file
        """Send one spooled file; return the archive's (success or warning) status, else raise a ``PeerError``.

        An unreadable spool file raises ``OSError`` before anything is sent.
        """
        with path.open("rb") as fh:
            body = related_body(fh, os.fstat(fh.fileno()).st_size)
            headers = {"Content-Type": body.content_type, "Content-Length": str(body.length), "Accept": DICOM_JSON}
            if self._client is None:
                self._client = self._client_factory()
            try:
                response = self._client.post("/studies", content=body.chunks, headers=headers)
            except httpx.HTTPError as exc:
                self.close()  # the connection's state is unknown
                raise peer_error(exc, WHAT, self.base) from exc
        try:
            parsed = json_body(response, WHAT) if response.content else None
        except PermanentPeerError:
            parsed = None  # an unreadable body: the HTTP status decides
        return stow_outcome(response.status_code, parsed, self.base)

    def close(self, *, abort: bool = False) -> None:  # noqa: ARG002 - HTTP has nothing between release and abort
        """Close the HTTP client (its connections); the next send opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
