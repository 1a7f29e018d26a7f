"""Durable ingest: admission of associations and the C-STORE path up to the Success answer.

This module knows nothing of pynetdicom: the DICOM handlers translate events into calls
here and the answers back into DIMSE statuses. Invariant 1 lives here: Success is returned
only after the file is fsynced in the spool and its ledger row is committed.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from guard import runtime
from guard.config.settings import Settings, SourceSettings
from guard.domain import status as st
from guard.domain.admission import Service, address_allowed
from guard.domain.errors import InvalidUIDError, LedgerError, PermanentSpoolError, SpoolError
from guard.domain.header import RECORDED_TAGS, from_inspection
from guard.domain.iocm import referenced_studies, rejection_title
from guard.domain.states import AuditEvent, Outcome
from guard.domain.structure import Inspection, inspect
from guard.domain.uids import is_valid_uid, require_uid
from guard.ledger.instances import Receipt, ReceivedInstance, record_received
from guard.ledger.ledger import Ledger
from guard.services.delete.gate import DeleteGate
from guard.spool import Spool

if TYPE_CHECKING:
    from guard.runtime import ReceiveError

log = structlog.get_logger("guard.services.ingest")

#: Refusals that are security events (``security.alert``) rather than failed receipts.
_SECURITY_REASONS = frozenset({"invalid-uid", "service-not-allowed", "dataset-too-large"})


class RejectReason(IntEnum):
    """A-ASSOCIATE-RJ diagnostics, service-user source (PS3.8 9.3.4)."""

    NO_REASON = 0x01
    CALLING_AE_NOT_RECOGNIZED = 0x03
    CALLED_AE_NOT_RECOGNIZED = 0x07


@dataclass(frozen=True)
class Admission:
    """Whether an association is admitted, and why not.

    ``services`` are what an admitted source may use; None for the archive, whose associations
    carry Storage Commitment reports and retrieved instances and are checked by their handlers.
    """

    accepted: bool
    diagnostic: RejectReason = RejectReason.NO_REASON
    reason: str = ""
    services: frozenset[Service] | None = None


def resolve_host(name: str) -> frozenset[str]:
    """The addresses of host ``name`` from the system resolver; empty when it does not resolve."""
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(name, None))
    except (OSError, UnicodeError):
        return frozenset()


@dataclass(frozen=True)
class StoreRequest:
    """One C-STORE as received: the command's UIDs and the temporary file holding the data set."""

    temp_path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    calling_ae: str
    peer_address: str
    receive_error: ReceiveError | None = None


@dataclass(frozen=True)
class StoreAnswer:
    """The status to answer, with an Error Comment on failure (at most 64 characters, LO)."""

    status: int
    comment: str = ""


def _strip(value: object) -> str:
    return str(value).strip() if value is not None else ""


def record_receipt(ledger: Ledger, item: ReceivedInstance) -> Receipt:
    """Record an instance already durable in the spool, with its ``instance.received`` audit record, in one transaction.

    The transaction the C-STORE answer waits for (a duplicate is recorded and audited as nothing);
    raises ``LedgerError`` as ``Ledger.transaction`` does.
    """
    with ledger.transaction() as tx:
        receipt, version = record_received(tx, item)
        if receipt is not Receipt.DUPLICATE:
            tx.audit(
                AuditEvent.INSTANCE_RECEIVED,
                actor=item.calling_ae,
                peer_address=item.peer_address,
                patient_id=item.patient_id,
                study_uid=item.study_uid,
                series_uid=item.series_uid,
                sop_instance_uid=item.sop_instance_uid,
                detail={
                    "receipt": receipt.value,
                    "version": version,
                    "size": item.size,
                    "sha256": item.sha256,
                    "sop_class_uid": item.sop_class_uid,
                    "transfer_syntax": item.transfer_syntax,
                },
            )
    return receipt


class IngestService:
    """Admits sources and makes their instances durable."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        spool: Spool,
        on_received: Callable[[], None] | None = None,
        gate: DeleteGate | None = None,
    ) -> None:
        """Serve with ``settings``, recording in ``ledger`` and ``spool``; call ``on_received`` after each new instance.

        With a ``gate``, IOCM rejection notes are delete requests decided by it.
        """
        self.gate = gate
        self.settings = settings
        self.ledger = ledger
        self.spool = spool
        self.on_received = on_received

    def admit(self, calling_ae: str, called_ae: str, address: str) -> Admission:
        """Decide on an association request; audit the decision either way."""
        calling, called = calling_ae.strip(), called_ae.strip()
        source = self.settings.source(calling)
        if self.settings.node.check_called_ae and called not in {self.settings.node.ae_title, self.settings.relay_ae_title}:
            result = Admission(accepted=False, diagnostic=RejectReason.CALLED_AE_NOT_RECOGNIZED, reason="called-ae-not-recognized")
        elif source is None and self.is_archive(calling):
            # The archive opens associations to deliver Storage Commitment reports (PS3.4 J.3.3).
            result = (
                Admission(accepted=True)
                if self._archive_address_ok(address)
                else Admission(accepted=False, diagnostic=RejectReason.CALLING_AE_NOT_RECOGNIZED, reason="address-not-allowed")
            )
        elif source is None:
            result = Admission(accepted=False, diagnostic=RejectReason.CALLING_AE_NOT_RECOGNIZED, reason="calling-ae-not-recognized")
        else:
            result = self._admit_source(source, address)
        detail: dict[str, object] = {"calling_ae": calling, "called_ae": called}
        if result.services is not None:
            detail["services"] = sorted(result.services)
        if result.accepted:
            self.ledger.audit(AuditEvent.ASSOCIATION_ACCEPTED, actor=calling, peer_address=address, detail=detail)
        else:
            detail["reason"] = result.reason
            self.ledger.audit(AuditEvent.ASSOCIATION_REJECTED, Outcome.REFUSED, actor=calling, peer_address=address, detail=detail)
        return result

    def _admit_source(self, source: SourceSettings, address: str) -> Admission:
        """A configured source: its address must be allowed (``allowed_addresses``, else ``host``)."""
        if source.allowed_addresses:
            allowed = address_allowed(address, source.allowed_addresses, resolve_host).allowed
        else:
            allowed = not source.host or source.host == address
        if not allowed:
            return Admission(accepted=False, diagnostic=RejectReason.CALLING_AE_NOT_RECOGNIZED, reason="address-not-allowed")
        return Admission(accepted=True, services=frozenset(source.services))

    def allows(self, calling_ae: str, service: Service) -> bool:
        """Whether ``calling_ae`` is a source allowed to use ``service`` (handlers check before serving)."""
        source = self.settings.source(calling_ae)
        return source is not None and service in source.services

    def refuse_service(self, calling_ae: str, peer_address: str, service: Service) -> None:
        """Audit a request for a service the source may not use (the handler answers 0x0124)."""
        detail = {"alert": "service-not-allowed", "reason": "service-not-allowed", "service": service.value}
        self.ledger.audit_or_log(AuditEvent.SECURITY_ALERT, Outcome.REFUSED, actor=calling_ae, peer_address=peer_address, detail=detail)

    def is_archive(self, calling_ae: str) -> bool:
        """Whether ``calling_ae`` is the archive's AE title."""
        return calling_ae.strip() == self.settings.archive.ae_title

    def is_source(self, calling_ae: str) -> bool:
        """Whether ``calling_ae`` is a configured source."""
        return self.settings.source(calling_ae) is not None

    def _archive_address_ok(self, address: str) -> bool:
        """The archive's reports must come from its host (the built-in archive: this machine)."""
        host = self.settings.archive.host or "127.0.0.1"
        try:
            allowed = {host, *(info[4][0] for info in socket.getaddrinfo(host, None))}
        except OSError:
            return False
        return address in allowed

    def store(self, req: StoreRequest) -> StoreAnswer:
        """Make one received instance durable, then (only then) answer Success."""
        checked = self._check(req)
        if isinstance(checked, StoreAnswer):
            return checked
        header, study_uid, series_uid, sop_uid = checked
        refusal = self._rejection_note_refusal(req, header)
        if refusal is not None:
            return refusal
        try:
            stored = self.spool.place(req.temp_path, study_uid, sop_uid, digest=runtime.streamed_digest(req.temp_path))
        except PermanentSpoolError as exc:
            # The spool will never take this instance: Error, Cannot Understand (PS3.4 B.2.3), not worth a resend.
            return self._refuse(req, st.CANNOT_UNDERSTAND, "spool-refused", str(exc))
        except SpoolError as exc:
            # Transient (disk full, I/O error, read-only): Refused, Out of Resources (PS3.4 B.2.3), the sender retries.
            return self._refuse(req, st.OUT_OF_RESOURCES, "spool-unavailable", str(exc))
        item = ReceivedInstance(
            sop_instance_uid=sop_uid,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_class_uid=req.sop_class_uid,
            transfer_syntax=req.transfer_syntax,
            size=stored.size,
            sha256=stored.sha256,
            spool_path=stored.relative_path,
            patient_id=_strip(header.get("PatientID")) or None,
            modality=_strip(header.get("Modality")) or None,
            calling_ae=req.calling_ae,
            peer_address=req.peer_address,
        )
        try:
            receipt = record_receipt(self.ledger, item)
        except LedgerError as exc:
            return self._refuse(req, st.OUT_OF_RESOURCES, "ledger-unavailable", str(exc))
        if receipt is not Receipt.DUPLICATE and self.on_received is not None:
            self.on_received()
        return StoreAnswer(st.SUCCESS)

    def _rejection_note_refusal(self, req: StoreRequest, header: Dataset) -> StoreAnswer | None:
        """The store or kos service check; an IOCM rejection note is a delete request: 0x0124 unless every referenced study is safe."""
        title = rejection_title(header)
        service = Service.STORE if title is None else Service.KOS
        if not self.allows(req.calling_ae, service):
            message = f"{req.calling_ae} may not use the {service.value} service"
            return self._refuse(req, st.REFUSED_NOT_AUTHORIZED, "service-not-allowed", message)
        if title is None or self.gate is None:
            return None
        studies = referenced_studies(header)
        if not studies or not all(is_valid_uid(uid) for uid in studies):
            return self._refuse(req, st.REFUSED_NOT_AUTHORIZED, "rejection-note-without-valid-study", "no valid referenced study")
        refused: list[str] = []
        for study in studies:
            outcome = self.gate.request(
                study, channel="iocm", requester=req.calling_ae, peer_address=req.peer_address, reason=title, carry_out=False
            )
            if not outcome.decision.permitted:
                refused.extend(r.value for r in outcome.decision.reasons)
        if refused:
            self.spool.discard(req.temp_path)
            # Error Comment (0000,0902) is LO: 64 characters, so the reason codes only.
            return StoreAnswer(st.REFUSED_NOT_AUTHORIZED, ("delete refused: " + ",".join(dict.fromkeys(refused)))[:64])
        return None

    def _precheck(self, req: StoreRequest) -> StoreAnswer | Inspection:
        """Refuse before parsing: not a source, a failed or oversized receive, a malformed data set; else the walk's findings."""
        if not self.is_source(req.calling_ae):
            return self._refuse(req, st.REFUSED_NOT_AUTHORIZED, "not-a-source", f"{req.calling_ae} may not store to the guard")
        if req.receive_error is not None:
            # Both a failing disk and a data set over node.max_dataset_size are 0xA700 (Refused: Out
            # of Resources, PS3.4 B.2.3): the guard will not hold it now; the reason tells which.
            return self._refuse(req, st.OUT_OF_RESOURCES, req.receive_error.reason, req.receive_error.message)
        inspection = inspect(req.temp_path, req.transfer_syntax, RECORDED_TAGS)
        if inspection.problem is not None:
            return self._refuse(req, st.CANNOT_UNDERSTAND, "cannot-parse", f"malformed data set: {inspection.problem}")
        return inspection

    def _check(self, req: StoreRequest) -> StoreAnswer | tuple[Dataset, str, str, str]:
        """Parse the data set header and validate its UIDs; a failure answer when it does not hold up."""
        inspected = self._precheck(req)
        if isinstance(inspected, StoreAnswer):
            return inspected
        # The elements the walk kept, decoded as dcmread would; the file itself when it could not keep them.
        header = from_inspection(inspected, req.transfer_syntax)
        try:
            if header is None:
                header = dcmread(req.temp_path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, RecursionError) as exc:
            return self._refuse(req, st.CANNOT_UNDERSTAND, "cannot-parse", f"data set cannot be parsed: {exc}")
        try:
            sop_uid = require_uid(req.sop_instance_uid, "Affected SOP Instance UID")
            require_uid(req.sop_class_uid, "Affected SOP Class UID")
            require_uid(_strip(header.get("SOPInstanceUID")), "SOPInstanceUID")
            study_uid = require_uid(_strip(header.get("StudyInstanceUID")), "StudyInstanceUID")
            series_uid = require_uid(_strip(header.get("SeriesInstanceUID")), "SeriesInstanceUID")
        except InvalidUIDError as exc:
            return self._refuse(req, st.CANNOT_UNDERSTAND, "invalid-uid", str(exc))
        if _strip(header.get("SOPInstanceUID")) != sop_uid or _strip(header.get("SOPClassUID")) != req.sop_class_uid:
            message = "SOP Class or Instance UID in the data set differs from the request"
            return self._refuse(req, st.DATASET_DOES_NOT_MATCH_SOP_CLASS, "does-not-match", message)
        return header, study_uid, series_uid, sop_uid

    def _refuse(self, req: StoreRequest, status: int, reason: str, message: str) -> StoreAnswer:
        """Answer a failure status and record why; the temporary file is discarded."""
        self.spool.discard(req.temp_path)
        self._audit_refusal(req, status, reason, message)
        return StoreAnswer(status, f"{reason}: {message}"[:64])

    def _audit_refusal(self, req: StoreRequest, status: int, reason: str, message: str) -> None:
        """Audit a refused instance; a ledger that cannot write is logged, not raised (the answer is already a failure)."""
        detail = {
            "status": f"0x{status:04X}",
            "reason": reason,
            "message": message[:500],
            "sop_instance_uid": req.sop_instance_uid[:200],
            "sop_class_uid": req.sop_class_uid[:200],
        }
        event = AuditEvent.SECURITY_ALERT if reason in _SECURITY_REASONS else AuditEvent.INSTANCE_RECEIVED
        self.ledger.audit_or_log(event, Outcome.FAILURE, actor=req.calling_ae, peer_address=req.peer_address, detail=detail)
