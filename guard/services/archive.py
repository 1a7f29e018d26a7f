"""The archive as the services see it, whatever protocol reaches it: the one seam.

The forwarder, the confirmer, reconcile and the delete gate call an ``Archive``; they never
import pynetdicom's association API or httpx. ``open_archive`` builds the one named by
``archive.protocol``: ``guard.dicom.archive.DimseArchive`` (C-STORE, C-FIND, C-ECHO) or
``guard.web.dicomweb.DicomWebArchive`` (STOW-RS, QIDO-RS, WADO-RS, an HTTP probe). Storage
Commitment is not part of the seam: only a DIMSE archive has it (the confirmer asks for it
through ``guard.dicom.commitment`` when ``archive.confirm`` says so, which the settings allow
only with ``protocol = dimse``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from guard.config.settings import ArchiveProtocol, Settings


class Sender(Protocol):
    """What a forwarding worker sends with: one per worker, its connection reused between instances."""

    def send(self, path: Path, sop_class_uid: str, transfer_syntax: str) -> int:
        """Send one spooled file; the archive's success or warning status, else a ``PeerError`` (``OSError``: the file)."""
        ...

    def close(self, *, abort: bool = False) -> None:
        """Let the connection go (``abort``: its state is unknown); the next send opens a new one."""
        ...


class Archive(Protocol):
    """The long-term archive."""

    @property
    def description(self) -> str:
        """Where the archive is, for people (never with credentials)."""
        ...

    def sender(self) -> Sender:
        """A new sender for one forwarding worker."""
        ...

    def study_instances(self, study_uid: str) -> set[str]:
        """Every SOP Instance UID the archive lists for the study now; a ``PeerError`` when it cannot say."""
        ...

    def ping(self, timeout: float) -> None:
        """Whether the archive answers at all: returns, or raises a ``PeerError``."""
        ...


def open_archive(settings: Settings) -> Archive:
    """The archive of ``settings.archive``, with ``forward.timeout`` for every request or association."""
    archive = settings.archive
    if archive.protocol is ArchiveProtocol.DICOMWEB:
        from guard.web.dicomweb import DicomWebArchive  # noqa: PLC0415 - httpx only where a DICOMweb archive is configured

        return DicomWebArchive(archive, timeout=settings.forward.timeout)
    from guard.dicom.archive import DimseArchive  # noqa: PLC0415 - pynetdicom's association API only where it is used

    return DimseArchive(settings.node.ae_title, archive, timeout=settings.forward.timeout, max_pdu=settings.node.max_pdu)
