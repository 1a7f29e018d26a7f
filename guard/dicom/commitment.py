"""DICOM conversations used by confirmation: N-ACTION and C-FIND towards the archive, N-EVENT-REPORT towards a source.

Associations, the C-FIND loop and the translation of outcomes into ``PeerError`` are
``guard.dicom.conversation``'s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.sequence import Sequence
from pynetdicom import build_role, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
)

from guard.dicom.conversation import associated, comment_of, find_all, outbound_ae, peer_failure, status_of
from guard.dicom.net import Peer
from guard.domain import status as st

# PS3.4 J.3.1: the well-known SOP Instance UID of the Storage Commitment Push Model.
COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
ACTION_REQUEST_COMMIT = 1
EVENT_ALL_SUCCEEDED = 1
EVENT_SOME_FAILED = 2


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
    answering = threading.Event()
    got_report = threading.Event()

    def _on_report(event: Any) -> tuple[int, None]:
        report = parse_report(event.event_information)
        if report is None:
            return st.INVALID_ARGUMENT_VALUE, None
        if on_report is not None:
            on_report(report, archive.ae_title)
        answering.set()
        return st.SUCCESS, None

    def _on_pdu_sent(event: Any) -> None:
        # The report counts as done once its response is on the wire: releasing while the
        # handler's answer is still being queued would put the response after the A-RELEASE-RQ,
        # which the upper layer refuses (PS3.8 9.2, Sta7). Nothing else is sent meanwhile.
        if answering.is_set() and isinstance(event.pdu, P_DATA_TF):
            got_report.set()

    ae = outbound_ae(own_ae, timeout, [StorageCommitmentPushModel])
    handlers = [(evt.EVT_N_EVENT_REPORT, _on_report), (evt.EVT_PDU_SENT, _on_pdu_sent)]
    with associated(ae, archive, handlers) as assoc:
        status, _ = assoc.send_n_action(ds, ACTION_REQUEST_COMMIT, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID)
        code = status_of(status, "N-ACTION", archive)
        if code != st.SUCCESS:  # PS3.4 J.3.2.1.1: Success, or a failure (no report follows)
            raise peer_failure(code, "N-ACTION", archive, comment_of(status))
        if report_wait > 0:
            got_report.wait(report_wait)


def find_study_instances(own_ae: str, archive: Peer, study_uid: str, *, timeout: float) -> set[str]:
    """Every SOP Instance UID the archive lists for a study (Study Root C-FIND, IMAGE level)."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    found = find_all(own_ae, archive, query, StudyRootQueryRetrieveInformationModelFind, timeout=timeout)
    return {str(identifier.SOPInstanceUID) for identifier in found if "SOPInstanceUID" in identifier}


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
    ae = outbound_ae(own_ae, timeout, [StorageCommitmentPushModel])
    role = build_role(StorageCommitmentPushModel, scp_role=True)
    with associated(ae, source, ext_neg=[role]) as assoc:
        event_type = EVENT_SOME_FAILED if failures else EVENT_ALL_SUCCEEDED
        status, _ = assoc.send_n_event_report(ds, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID)
        code = status_of(status, "N-EVENT-REPORT", source)
        if code != st.SUCCESS:  # PS3.4 J.3.3.1.1: Success, or a failure
            raise peer_failure(code, "N-EVENT-REPORT", source, comment_of(status))


def _ref(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item
