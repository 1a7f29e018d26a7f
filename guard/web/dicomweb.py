"""The archive's DICOMweb service (PS3.18): STOW-RS to store, QIDO-RS to list, WADO-RS to hash.

``DicomWebArchive`` is what the services call (through ``guard.services.archive``): a sender
per forwarding worker (``StowSender``, ``guard.web.stow``), the SOP Instance UIDs the archive
lists for a study (QIDO-RS, the confirmation, re-verification and the delete gate's live
check), the digests of instances as the archive hands them back (WADO-RS) and a probe.

httpx's outcomes become ``PeerError``s in ``guard.web.errors`` and nowhere else.

Credentials are read from their file at each request (a rotated token is used at once) and
never appear in a message or a log line. Environment variables (proxies, ``.netrc``) are not
read: the configuration says everything.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from urllib.parse import quote

import httpx
import structlog

from guard.config.settings import ArchiveAuth, ArchiveSettings, CredentialFileError, read_credential
from guard.domain.errors import ArchiveUnreachableError, PermanentPeerError, TransientPeerError
from guard.domain.uids import is_valid_uid, require_uid
from guard.web.errors import check_response, json_body, peer_error
from guard.web.multipart import DICOM_JSON, DICOM_MEDIA_TYPE, DicomParts, boundary_of
from guard.web.stow import StowSender

log = structlog.get_logger("guard.dicomweb")

#: WADO-RS: the instance in the transfer syntax the archive holds it in (the media type's transfer-syntax=*), so its bytes can match.
ORIGINAL_SYNTAX = f'multipart/related; type="{DICOM_MEDIA_TYPE}"; transfer-syntax=*'
#: QIDO-RS page size (the limit and offset query parameters).
QIDO_PAGE = 1000
_SOP_INSTANCE_UID = "00080018"


class _FileCredentials(httpx.Auth):
    """The Authorization header, read from its file at each request."""

    def __init__(self, archive: ArchiveSettings) -> None:
        self.archive = archive

    def _header(self) -> str:
        archive = self.archive
        try:
            secret = read_credential(archive)
        except CredentialFileError as exc:
            msg = f"cannot use the archive's credentials: {exc}"
            raise ArchiveUnreachableError(msg) from exc
        if archive.auth is ArchiveAuth.BEARER:
            return f"Bearer {secret}"
        return "Basic " + base64.b64encode(f"{archive.username}:{secret}".encode()).decode("ascii")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the header; one round trip (no challenge dance)."""
        request.headers["Authorization"] = self._header()
        yield request


def _verify(archive: ArchiveSettings) -> ssl.SSLContext | bool:
    if not archive.verify_tls:
        return False
    if archive.ca_file is not None:
        return ssl.create_default_context(cafile=str(archive.ca_file))
    return True


def sop_instance_uids(matches: object) -> list[str]:
    """The SOP Instance UIDs (0008,0018) of a QIDO-RS answer in DICOM JSON (PS3.18 F.2); invalid ones left out."""
    if matches is None:
        return []
    if not isinstance(matches, list):
        msg = "the QIDO-RS answer is not a JSON array of matches"
        raise PermanentPeerError(msg)
    found: list[str] = []
    for match in matches:
        values = match.get(_SOP_INSTANCE_UID, {}).get("Value", []) if isinstance(match, dict) else []
        found.extend(str(v) for v in values[:1] if is_valid_uid(v))
    return found


class DicomWebArchive:
    """A DICOMweb archive: ``archive.url`` with ``archive.auth``, TLS per ``archive.ca_file`` / ``verify_tls``."""

    #: How byte checks retrieve from it (recorded with each check).
    method = "wado-rs"

    def __init__(self, archive: ArchiveSettings, *, timeout: float, page_size: int = QIDO_PAGE) -> None:
        """Talk to ``archive.url``; ``timeout`` seconds to connect, send, and for each read; QIDO-RS pages of ``page_size``."""
        self.archive = archive
        self.page_size = page_size
        self.base = archive.url.rstrip("/")
        self.timeout = timeout
        self._auth = _FileCredentials(archive) if archive.auth is not ArchiveAuth.NONE else None
        self._verify = _verify(archive)

    @property
    def description(self) -> str:
        """Where the archive is, for people."""
        return self.base

    def client(self) -> httpx.Client:
        """A new HTTP client to the archive (keep-alive within it)."""
        return httpx.Client(
            base_url=self.base, auth=self._auth, verify=self._verify, timeout=self.timeout, trust_env=False, follow_redirects=False
        )

    @contextmanager
    def _session(self) -> Iterator[httpx.Client]:
        with self.client() as client:
            yield client

    def sender(self) -> StowSender:
        """A STOW-RS sender (one per forwarding worker)."""
        return StowSender(self.client, self.base)

    def study_instances(self, study_uid: str) -> set[str]:
        """Every SOP Instance UID the archive lists for the study (QIDO-RS, instance level, page by page)."""
        study = require_uid(study_uid, "StudyInstanceUID")
        what = "QIDO-RS SearchForInstances"
        found: set[str] = set()
        offset = 0
        with self._session() as client:
            while True:
                params: dict[str, str | int] = {
                    "StudyInstanceUID": study,
                    "includefield": _SOP_INSTANCE_UID,
                    "limit": self.page_size,
                    "offset": offset,
                }
                try:
                    response = client.get("/instances", params=params, headers={"Accept": DICOM_JSON})
                except httpx.HTTPError as exc:
                    raise peer_error(exc, what, self.base) from exc
                check_response(response, what, self.base)
                page = sop_instance_uids(json_body(response, what))
                before = len(found)
                found.update(page)
                offset += len(page)
                # A short page is the last; an archive that ignores limit/offset sends nothing new.
                if len(page) < self.page_size or len(found) == before:
                    return found

    def digests(self, study_uid: str, series_uid: str, sop_instance_uids: Sequence[str]) -> Mapping[str, str]:
        """SOP Instance UID -> SHA-256 of the data set the archive returns (WADO-RS, original transfer syntax).

        The same rule as the spool's receive digest (``guard.domain.digest``); each copy is
        hashed as it streams and never kept. An instance the archive did not return (404, or
        a part that is not a DICOM file) is absent from the answer.
        """
        path = f"/studies/{quote(require_uid(study_uid, 'StudyInstanceUID'))}/series/{quote(require_uid(series_uid, 'SeriesInstanceUID'))}"
        found: dict[str, str] = {}
        with self._session() as client:
            for sop in sop_instance_uids:
                digest = self._retrieve_digest(client, f"{path}/instances/{quote(require_uid(sop, 'SOPInstanceUID'))}")
                if digest is not None:
                    found[sop] = digest
        return found

    def _retrieve_digest(self, client: httpx.Client, path: str) -> str | None:
        what = "WADO-RS RetrieveInstance"
        try:
            with client.stream("GET", path, headers={"Accept": ORIGINAL_SYNTAX}) as response:
                if response.status_code in {404, 410}:
                    return None
                check_response(response, what, self.base)
                boundary = boundary_of(response.headers.get("content-type", ""))
                if boundary is None:
                    msg = f"{what}: the archive answered {response.headers.get('content-type')!r}, not multipart/related"
                    raise PermanentPeerError(msg)
                parts = DicomParts(boundary)
                for chunk in response.iter_bytes():
                    parts.feed(chunk)
        except httpx.HTTPError as exc:
            raise peer_error(exc, what, self.base) from exc
        if not parts.complete:
            msg = f"{what}: the archive's answer for {path} was cut short"
            raise TransientPeerError(msg)
        if parts.malformed or len(parts.digests) != 1:
            log.warning("dicomweb.retrieve_unusable", action="dicomweb.retrieve_unusable", path=path, parts=len(parts.digests))
            return None
        return parts.digests[0]

    def ping(self, timeout: float) -> None:
        """One QIDO-RS study search for a single match; raises the ``PeerError`` of any failure."""
        what = "QIDO-RS SearchForStudies"
        try:
            with self._session() as client:
                response = client.get("/studies", params={"limit": 1}, headers={"Accept": DICOM_JSON}, timeout=timeout)
        except httpx.HTTPError as exc:
            raise peer_error(exc, what, self.base) from exc
        check_response(response, what, self.base)
