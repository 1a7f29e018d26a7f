"""The archive reached by DIMSE: C-STORE senders, C-FIND listings, C-ECHO probes.

``DimseArchive`` is the DIMSE side of the archive seam the services call
(``guard.services.archive``); its DICOMweb counterpart is ``guard.web.dicomweb.DicomWebArchive``.
Storage Commitment stays in ``guard.dicom.commitment``: only a DIMSE archive has it.
"""

from __future__ import annotations

from guard.config.settings import ArchiveSettings
from guard.dicom import probe
from guard.dicom.commitment import find_study_instances
from guard.dicom.net import archive_peer
from guard.dicom.store import ArchiveSender


class DimseArchive:
    """The archive at ``archive.ae_title@host:port`` (or the built-in one), called as ``own_ae``."""

    def __init__(self, own_ae: str, archive: ArchiveSettings, *, timeout: float, max_pdu: int) -> None:
        """Associate as ``own_ae``; ``timeout`` for connect, ACSE and DIMSE; propose ``max_pdu`` when sending."""
        self.own_ae = own_ae
        self.archive = archive
        self.peer = archive_peer(archive)
        self.timeout = timeout
        self.max_pdu = max_pdu

    @property
    def description(self) -> str:
        """Where the archive is, for people."""
        return f"{self.peer.ae_title}@{self.peer.host}:{self.peer.port}"

    def sender(self) -> ArchiveSender:
        """A C-STORE sender with an association of its own (one per forwarding worker)."""
        return ArchiveSender(self.own_ae, self.archive, timeout=self.timeout, max_pdu=self.max_pdu)

    def study_instances(self, study_uid: str) -> set[str]:
        """Every SOP Instance UID the archive lists for the study (Study Root C-FIND, IMAGE level)."""
        return find_study_instances(self.own_ae, self.peer, study_uid, timeout=self.timeout)

    def ping(self, timeout: float) -> None:
        """One C-ECHO; raises the ``PeerError`` of any failure."""
        probe.echo_ping(self.own_ae, self.peer)(timeout)
