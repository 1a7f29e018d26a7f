"""The association pynetdicom opens to a C-MOVE destination for the sub-operations (PS3.4 C.4.2.2).

A relayed move's sub-operations go from the guard to the Move Destination on an association
pynetdicom opens itself (the C-MOVE SCP's generator yields where to, and how). This module says
how: the presentation contexts to propose, the socket tuning and TLS of ``association_options``,
the destination's answer to each C-STORE (``SubOperationTally``) and its certificate pin.

What the generator yields for each instance is a ``RelayedFile``: the relayed file named, not
read. Once the association is established, its ``send_c_store`` (the one pynetdicom's C-MOVE
SCP calls for each sub-operation) is replaced for that association alone: a ``RelayedFile`` is
written from its file as it is, by ``guard.dicom.pdu_writer`` (ADR 0019), and whatever that
does not take (TLS, a deflated transfer syntax, a context accepted only in another uncompressed
syntax) is read with ``dcmread`` and given to pynetdicom's own ``send_c_store``, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import build_context, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from guard.dicom import pdu_writer, tls
from guard.dicom.net import Peer, association_options
from guard.dicom.pdata import Part10Header, read_file_header
from guard.domain import status as st

#: Transfer syntaxes proposed per SOP class to the destination: uncompressed in one context
#: (pynetdicom converts between them), and the usual compressed ones each in its own, since
#: pynetdicom never transcodes. At most 128 contexts (PS3.8 9.3.2.2): 14 SOP classes.
_COMPRESSED = (JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, JPEG2000, RLELossless)
_MAX_CONTEXTS = 128
#: Proposed when the archive's C-FIND does not return SOP Class UIDs (1.2.840.10008.5.1.4.1.1.x):
#: CT, enhanced CT, MR, enhanced MR, CR, DX, mammography, US, US multi-frame, secondary capture,
#: PET, NM, XA, RF, breast tomosynthesis, basic text / enhanced / comprehensive SR, key object
#: selection, grayscale presentation state, segmentation, encapsulated PDF, RT structure set,
#: RT dose, RT plan, RT image.
COMMON_STORAGE_CLASSES = tuple(
    f"1.2.840.10008.5.1.4.1.1.{leaf}"
    for leaf in (
        "2", "2.1", "4", "4.1", "1", "1.1", "1.2", "6.1", "3.1", "7", "128", "20", "12.1", "12.2", "13.1.3",
        "88.11", "88.22", "88.33", "88.59", "11.1", "66.4", "104.1", "481.3", "481.2", "481.5", "481.1",
    )
)  # fmt: skip


def destination_contexts(known_classes: Iterable[str], *, classes_unknown: bool) -> list[PresentationContext]:
    """Presentation contexts to propose to the destination, most common first."""
    contexts: list[PresentationContext] = []
    known = list(dict.fromkeys(c for c in known_classes if c))
    for sop_class in known:
        if len(contexts) + 1 + len(_COMPRESSED) > _MAX_CONTEXTS:
            break
        contexts.append(build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]))
        contexts.extend(build_context(sop_class, syntax) for syntax in _COMPRESSED)
    if classes_unknown:
        for sop_class in (c for c in COMMON_STORAGE_CLASSES if c not in known):
            if len(contexts) + 1 + len(_COMPRESSED[:3]) > _MAX_CONTEXTS:
                break
            contexts.append(build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
            contexts.extend(build_context(sop_class, syntax) for syntax in _COMPRESSED[:3])
    # The archive listed none of the instances: the association is still needed for the
    # protocol (every sub-operation will be reported failed), so propose Verification.
    return contexts or [build_context(Verification)]


@dataclass
class SubOperationTally:
    """The destination's answers, per SOP Instance UID, seen on the sub-operation association."""

    statuses: dict[str, int | None] = field(default_factory=dict)
    assoc: Any = None

    def on_established(self, event: Any) -> None:
        """EVT_ESTABLISHED on the destination association: keep it, to check a pinned certificate; send relayed files directly."""
        self.assoc = event.assoc
        send_relayed_files(event.assoc)

    def on_response(self, event: Any) -> None:
        """EVT_DIMSE_RECV on the destination association: note each C-STORE response's status."""
        command = getattr(event.message, "command_set", None)
        if command is None or "Status" not in command or "AffectedSOPInstanceUID" not in command:
            return
        self.statuses[str(command.AffectedSOPInstanceUID)] = int(command.Status)

    def counts(self) -> tuple[int, int, list[str]]:
        """(completed, warning, failed SOP Instance UIDs) among the relayed instances."""
        completed = sum(1 for s in self.statuses.values() if s == st.SUCCESS)
        warning = sum(1 for s in self.statuses.values() if s is not None and s != st.SUCCESS and st.is_success(s))
        failed = [uid for uid, s in self.statuses.items() if s is None or not st.is_success(s)]
        return completed, warning, failed


def destination_options(destination: Peer, tally: SubOperationTally, contexts: list[PresentationContext]) -> dict[str, Any]:
    """The keyword arguments pynetdicom uses to associate with the destination, the tally listening."""
    handlers = [(evt.EVT_DIMSE_RECV, tally.on_response), (evt.EVT_ESTABLISHED, tally.on_established)]
    return {**association_options(destination, handlers), "contexts": contexts}


def pin_problem(destination: Peer, assoc: Any) -> str:
    """Why the destination's TLS certificate is not the pinned one (the association is then aborted), or empty.

    pynetdicom opens the sub-operation association itself, so the pin is checked here, after it
    is established and before anything is sent on it.
    """
    if not (destination.tls and destination.tls_fingerprint) or assoc is None:
        return ""
    try:
        tls.check_pin(assoc, destination.ae_title, destination.tls_fingerprint)
    except tls.CertificatePinError as exc:
        assoc.abort()
        return str(exc)
    return ""


class RelayedFile(Dataset):
    """A relayed instance as the C-MOVE SCP's generator yields it: its file, named and not decoded.

    A ``Dataset`` because pynetdicom accepts nothing else; it holds the two UIDs pynetdicom reads
    of it (the SOP Instance UID of a failed sub-operation, for the Failed SOP Instance UID List).
    """

    def __init__(self, path: Path, header: Part10Header) -> None:
        """The file at ``path``, whose File Meta is ``header``."""
        super().__init__()
        self.SOPClassUID = header.sop_class_uid
        self.SOPInstanceUID = header.sop_instance_uid
        self.__dict__["relayed_path"] = path
        self.__dict__["relayed_header"] = header


def relayed_file(path: Path) -> RelayedFile | None:
    """The file at ``path`` to relay, or None when it is not a Part 10 file whose File Meta reads."""
    try:
        with path.open("rb") as source:
            header = read_file_header(source)
    except OSError:
        return None
    return None if header is None else RelayedFile(path, header)


def send_relayed_files(assoc: Any) -> None:
    """Give the established sub-operation association ``assoc`` a ``send_c_store`` that takes ``RelayedFile``s."""
    writer = pdu_writer.attach(assoc)
    original: Callable[..., Dataset] = assoc.send_c_store

    def send_c_store(
        dataset: Any, msg_id: int = 1, priority: int = 2, originator_aet: str | None = None, originator_id: int | None = None
    ) -> Dataset:
        if isinstance(dataset, RelayedFile):
            if writer is not None and priority == 2 and originator_aet is not None and originator_id is not None:
                try:
                    answer = _written(writer, dataset, msg_id, (originator_aet, originator_id))
                except (OSError, EOFError, ValueError):
                    # Part of the request may be out: nothing more can go on this association.
                    # pynetdicom counts the sub-operation failed, and every later one fails at once.
                    assoc.abort()
                    raise
                if answer is not None:
                    return answer
            # Decoded, so that pynetdicom can send it in another uncompressed syntax the destination accepted.
            dataset = dcmread(dataset.relayed_path)
        return original(dataset, msg_id=msg_id, priority=priority, originator_aet=originator_aet, originator_id=originator_id)

    assoc.__dict__["send_c_store"] = send_c_store


def _written(writer: pdu_writer.DirectStore, relayed: RelayedFile, message_id: int, originator: tuple[str, int]) -> Dataset | None:
    """The destination's status for ``relayed`` written directly; None when it must go through pynetdicom instead."""
    header: Part10Header = relayed.relayed_header
    if not pdu_writer.writable(header):
        return None
    context = next(
        (
            cx
            for cx in writer.assoc.accepted_contexts
            if cx.abstract_syntax == header.sop_class_uid and cx.transfer_syntax[0] == header.transfer_syntax
        ),
        None,
    )
    if context is None:
        return None
    path: Path = relayed.relayed_path
    with path.open("rb") as source:
        return writer.store_file(source, header, int(context.context_id or 0), message_id, originator=originator)
