"""Sending spooled instances to the archive over reused associations.

One ``ArchiveSender`` holds at most one association. The presentation contexts it proposes
grow with the SOP classes and transfer syntaxes it meets; an instance is sent in the transfer
syntax it was received in (compressed data is never recompressed), so an archive that does
not accept that pair makes the failure permanent. pynetdicom outcomes become
``TransientPeerError`` or ``PermanentPeerError`` through ``guard.dicom.conversation``.

A request on an established association is written by ``guard.dicom.pdu_writer`` (the PDUs
straight to the socket, the data set's bytes as the spool holds them; ADR 0019); pynetdicom's
``send_c_store`` sends what that does not take: a TLS association, a deflated transfer syntax,
a file whose File Meta cannot be read here or disagrees with the ledger. Either way each
request has a Message ID of its own on the association (PS3.7 9.1.1.1.1).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Self

from pydicom import Dataset
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from guard.config.settings import ArchiveSettings
from guard.dicom import pdu_writer
from guard.dicom.conversation import expect_success, outbound_ae
from guard.dicom.net import archive_peer, open_association
from guard.dicom.pdata import Part10Header, read_file_header
from guard.domain.errors import PermanentPeerError, TransientPeerError

# PS3.8 9.3.2.2: at most 128 presentation contexts (odd IDs 1..255) per association.
_MAX_CONTEXTS = 128
#: PS3.7 9.1.1.1.1: Message IDs are 16-bit; the next one after the largest starts again at 1.
_MAX_MESSAGE_ID = 0xFFFF


class ArchiveSender:
    """C-STORE SCU towards the archive."""

    def __init__(self, own_ae_title: str, archive: ArchiveSettings, *, timeout: float, max_pdu: int) -> None:
        """Send as ``own_ae_title`` to ``archive``."""
        self.archive = archive
        self.ae = outbound_ae(own_ae_title, timeout, max_pdu=max_pdu)
        self.assoc: Association | None = None
        self.proposed: list[tuple[str, str]] = []
        self.writer: pdu_writer.DirectStore | None = None
        self._message_id = 0

    def send(self, path: Path, sop_class_uid: str, transfer_syntax: str) -> int:
        """Send one file; return the archive's (success or warning) status, else raise."""
        key = (sop_class_uid, transfer_syntax)
        assoc = self._association_for(key)
        context = next(
            (cx for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class_uid and cx.transfer_syntax[0] == transfer_syntax),
            None,
        )
        if context is None:
            msg = f"archive did not accept SOP class {sop_class_uid} with transfer syntax {transfer_syntax}"
            raise PermanentPeerError(msg)
        try:
            answer = self._store(assoc, path, context, self._next_message_id())
        except (OSError, EOFError, ValueError, AttributeError, RuntimeError) as exc:
            self.close(abort=True)
            msg = f"sending failed: {exc.__class__.__name__}: {exc}"
            raise TransientPeerError(msg) from exc
        try:
            return expect_success(answer, "C-STORE", archive_peer(self.archive))
        except TransientPeerError as exc:
            if exc.status is None:  # no response: the association's state is unknown
                self.close(abort=True)
            raise

    def _store(self, assoc: Association, path: Path, context: PresentationContext, message_id: int) -> Dataset:
        """One C-STORE of the file at ``path`` on ``context``: written directly when it can be, else by pynetdicom."""
        if self.writer is not None and self.writer.assoc is assoc:
            with path.open("rb") as source:
                header = _direct_header(source, context)
                if header is not None:
                    return self.writer.store_file(source, header, int(context.context_id or 0), message_id)
        return assoc.send_c_store(path, msg_id=message_id)

    def _next_message_id(self) -> int:
        self._message_id = self._message_id % _MAX_MESSAGE_ID + 1
        return self._message_id

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
        self.writer = pdu_writer.attach(assoc)
        self._message_id = 0
        return assoc

    def close(self, *, abort: bool = False) -> None:
        """Release (or abort) the association, if any."""
        assoc, self.assoc = self.assoc, None
        self.writer = None
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


def _direct_header(source: BinaryIO, context: PresentationContext) -> Part10Header | None:
    """The File Meta of the file at ``source`` when its data set can be sent as it is on ``context``; None otherwise.

    As ``send_c_store`` does, the request names the File Meta's SOP Class and Instance UIDs and
    needs its transfer syntax to be the context's; a deflated one is left to pynetdicom.
    """
    header = read_file_header(source)
    if header is None or header.sop_class_uid != context.abstract_syntax or header.transfer_syntax != context.transfer_syntax[0]:
        return None
    return header if pdu_writer.writable(header) else None
