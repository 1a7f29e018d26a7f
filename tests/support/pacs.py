"""A pynetdicom stand-in for a PACS that asks the guard for Storage Commitment and listens for the report."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"


@dataclass
class ReceivedReport:
    """An N-EVENT-REPORT the PACS received."""

    calling_ae: str
    event_type: int
    transaction_uid: str
    successes: list[str]
    failures: dict[str, int]


@dataclass
class PacsListener:
    """The PACS's own SCP: accepts the guard's reports (the guard is the SCP, via role selection)."""

    ae_title: str = "STORESCU"
    port: int = 0
    reports: list[ReceivedReport] = field(default_factory=list)
    server: ThreadedAssociationServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Self:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)])
        self.port = int(self.server.server_address[1])
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_report(self, event: Any) -> tuple[int, None]:
        info = event.event_information
        report = ReceivedReport(
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
            event_type=int(event.event_type),
            transaction_uid=str(info.TransactionUID),
            successes=[str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])],
            failures={str(i.ReferencedSOPInstanceUID): int(i.FailureReason) for i in info.get("FailedSOPSequence", [])},
        )
        with self.lock:
            self.reports.append(report)
        # (Status, Event Reply): Success with no reply (PS3.4 J.3.3.1.1); a bare status would make
        # pynetdicom fail while unpacking the answer and never acknowledge the report.
        return 0x0000, None

    def report_for(self, transaction_uid: str) -> ReceivedReport | None:
        with self.lock:
            return next((r for r in self.reports if r.transaction_uid == transaction_uid), None)


def request_commitment(
    guard_port: int,
    references: Sequence[tuple[str, str]],
    *,
    calling_ae: str = "STORESCU",
    called_ae: str = "GUARD",
    transaction_uid: str | None = None,
) -> tuple[str, int | None]:
    """Send an N-ACTION to the guard; return (Transaction UID, status)."""
    uid = transaction_uid or generate_uid()
    ds = Dataset()
    ds.TransactionUID = uid
    items = []
    for sop_class, sop_uid in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        items.append(item)
    ds.ReferencedSOPSequence = DicomSequence(items)
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", guard_port, ae_title=called_ae)
    if not assoc.is_established:
        return uid, None
    try:
        status, _ = assoc.send_n_action(ds, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID)
    finally:
        assoc.release()
    return uid, (int(status.Status) if status is not None and "Status" in status else None)
