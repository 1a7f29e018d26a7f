"""Sending spooled instances to the archive over reused associations.

One ``ArchiveSender`` holds at most one association. The presentation contexts it proposes
grow with the SOP classes and transfer syntaxes it meets; an instance is sent in the transfer
syntax it was received in (compressed data is never recompressed), so an archive that does
not accept that pair makes the failure permanent. pynetdicom outcomes become
``TransientPeerError`` or ``PermanentPeerError`` through ``guard.dicom.conversation``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pynetdicom.association import Association

from guard.config.settings import ArchiveSettings
from guard.dicom.conversation import expect_success, outbound_ae
from guard.dicom.net import archive_peer, open_association
from guard.domain.errors import PermanentPeerError, TransientPeerError

# PS3.8 9.3.2.2: at most 128 presentation contexts (odd IDs 1..255) per association.
_MAX_CONTEXTS = 128


class ArchiveSender:
    """C-STORE SCU towards the archive."""

    def __init__(self, own_ae_title: str, archive: ArchiveSettings, *, timeout: float, max_pdu: int) -> None:
        """Send as ``own_ae_title`` to ``archive``."""
        self.archive = archive
        self.ae = outbound_ae(own_ae_title, timeout, max_pdu=max_pdu)
        self.assoc: Association | None = None
        self.proposed: list[tuple[str, str]] = []

    def send(self, path: Path, sop_class_uid: str, transfer_syntax: str) -> int:
        """Send one file; return the archive's (success or warning) status, else raise."""
        key = (sop_class_uid, transfer_syntax)
        assoc = self._association_for(key)
        if not any(cx.abstract_syntax == sop_class_uid and cx.transfer_syntax[0] == transfer_syntax for cx in assoc.accepted_contexts):
            msg = f"archive did not accept SOP class {sop_class_uid} with transfer syntax {transfer_syntax}"
            raise PermanentPeerError(msg)
        try:
            answer = assoc.send_c_store(path)
        except (OSError, ValueError, AttributeError, RuntimeError) as exc:
            self.close(abort=True)
            msg = f"sending failed: {exc.__class__.__name__}: {exc}"
            raise TransientPeerError(msg) from exc
        try:
            return expect_success(answer, "C-STORE", archive_peer(self.archive))
        except TransientPeerError as exc:
            if exc.status is None:  # no response: the association's state is unknown
                self.close(abort=True)
            raise

    def _association_for(self, key: tuple[str, str]) -> Association:
        """An established association that proposed ``key``, reusing the current one if it did."""
        if self.assoc is not None and self.assoc.is_established and key in self.proposed:
            return self.assoc
        self.close()
        wanted = [*[k for k in self.proposed if k != key][-(_MAX_CONTEXTS - 1) :], key]
        for sop_class, syntax in wanted:
            self.ae.add_requested_context(sop_class, syntax)
        archive = archive_peer(self.archive)
        try:
            assoc = open_association(self.ae, archive, [])
        finally:
            self.ae.requested_contexts = []
        self.assoc = assoc
        self.proposed = wanted
        return assoc

    def close(self, *, abort: bool = False) -> None:
        """Release (or abort) the association, if any."""
        assoc, self.assoc = self.assoc, None
        if assoc is None:
            return
        if abort or not assoc.is_established:
            assoc.abort()
        else:
            assoc.release()

    def __enter__(self) -> Self:
        """Use as a context manager."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Release the association."""
        self.close()
