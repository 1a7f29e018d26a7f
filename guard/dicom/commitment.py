"""DICOM conversations used by confirmation: N-ACTION and C-FIND towards the archive, N-EVENT-REPORT towards a source.

Every pynetdicom outcome is translated here into a value or a ``TransientPeerError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
)

from guard.dicom.net import Peer, open_association
from guard.domain.errors import TransientPeerError

# PS3.4 J.3.1: the well-known SOP Instance UID of the Storage Commitment Push Model.
COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
ACTION_REQUEST_COMMIT = 1
EVENT_ALL_SUCCEEDED = 1
EVENT_SOME_FAILED = 2
PENDING_STATUSES = {0xFF00, 0xFF01}


@dataclass(frozen=True)
class Report:
    """A parsed Storage Commitment N-EVENT-REPORT (PS3.4 J.3.3)."""

    transaction_uid: str
    successes: list[str]
    failures: list[tuple[str, int | None]]


def parse_report(ds: Dataset | None) -> Report | None:
    """Read the Transaction UID, successes and failures of a report; None if it has no Transaction UID."""
    if ds is None or "TransactionUID" not in ds:
        return None
    successes = [str(item.ReferencedSOPInstanceUID) for item in ds.get("ReferencedSOPSequence", []) if "ReferencedSOPInstanceUID" in item]
    failures = [
        (str(item.ReferencedSOPInstanceUID), int(item.FailureReason) if "FailureReason" in item else None)
        for item in ds.get("FailedSOPSequence", [])
        if "ReferencedSOPInstanceUID" in item
    ]
    return Report(transaction_uid=str(ds.TransactionUID), successes=successes, failures=failures)


def _ae(own_ae: str, timeout: float) -> AE:
    ae = AE(ae_title=own_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    return ae


def request_commitment(
    own_ae: str,
    archive: Peer,
    *,
    transaction_uid: str,
    references: Iterable[tuple[str, str]],
    timeout: float,
    report_wait: float = 0.0,
    on_report: Callable[[Report, str], object] | None = None,
) -> None:
    """Send the N-ACTION (PS3.4 J.3.2); optionally hold the association for a report on it."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.ReferencedSOPSequence = Sequence([_ref(c, u) for c, u in references])
    got_report = threading.Event()

    def _on_report(event: Any) -> tuple[int, None]:
        report = parse_report(event.event_information)
        if report is None:
            return 0x0115, None
        if on_report is not None:
            on_report(report, archive.ae_title)
        got_report.set()
        return 0x0000, None

    ae = _ae(own_ae, timeout)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = open_association(ae, archive, [(evt.EVT_N_EVENT_REPORT, _on_report)])
    try:
        status, _ = assoc.send_n_action(ds, ACTION_REQUEST_COMMIT, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID)
        if status is None or "Status" not in status:
            msg = "no N-ACTION response from the archive"
            raise TransientPeerError(msg)
        if int(status.Status) != 0x0000:
            msg = f"archive answered the N-ACTION with 0x{int(status.Status):04X}"
            raise TransientPeerError(msg, status=int(status.Status))
        if report_wait > 0:
            got_report.wait(report_wait)
    finally:
        if assoc.is_established:
            assoc.release()


def find_study_instances(own_ae: str, archive: Peer, study_uid: str, *, timeout: float) -> set[str]:
    """Every SOP Instance UID the archive lists for a study (Study Root C-FIND, IMAGE level)."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    ae = _ae(own_ae, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = open_association(ae, archive, [])
    found: set[str] = set()
    try:
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status is None or "Status" not in status:
                msg = "C-FIND to the archive got no response"
                raise TransientPeerError(msg)
            code = int(status.Status)
            if code in PENDING_STATUSES:
                if identifier is not None and "SOPInstanceUID" in identifier:
                    found.add(str(identifier.SOPInstanceUID))
                continue
            if code != 0x0000:
                msg = f"archive answered the C-FIND with 0x{code:04X}"
                raise TransientPeerError(msg, status=code)
    finally:
        if assoc.is_established:
            assoc.release()
    return found


def deliver_report(
    own_ae: str,
    source: Peer,
    *,
    transaction_uid: str,
    successes: list[tuple[str, str]],
    failures: list[tuple[str, str, int]],
    timeout: float,
) -> None:
    """Send a Storage Commitment report to a source on a new association, the guard acting as SCP (PS3.4 J.3.3)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if successes:
        ds.ReferencedSOPSequence = Sequence([_ref(c, u) for c, u in successes])
    if failures:
        items = []
        for sop_class, sop_uid, reason in failures:
            item = _ref(sop_class, sop_uid)
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = Sequence(items)
    ae = _ae(own_ae, timeout)
    ae.add_requested_context(StorageCommitmentPushModel)
    role = build_role(StorageCommitmentPushModel, scp_role=True)
    assoc = open_association(ae, source, [], ext_neg=[role])
    try:
        event_type = EVENT_SOME_FAILED if failures else EVENT_ALL_SUCCEEDED
        status, _ = assoc.send_n_event_report(ds, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID)
        if status is None or "Status" not in status:
            msg = "no N-EVENT-REPORT response from the source"
            raise TransientPeerError(msg)
        if int(status.Status) != 0x0000:
            msg = f"source answered the N-EVENT-REPORT with 0x{int(status.Status):04X}"
            raise TransientPeerError(msg, status=int(status.Status))
    finally:
        if assoc.is_established:
            assoc.release()


def _ref(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item
