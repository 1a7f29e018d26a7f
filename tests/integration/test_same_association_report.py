"""A Storage Commitment report sent by the archive on the N-ACTION association itself is accepted."""

from __future__ import annotations

import threading
from typing import Any

from pydicom import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from guard.dicom.commitment import COMMITMENT_INSTANCE_UID, Report, request_commitment
from guard.dicom.net import Peer
from tests.support.waiting import wait_until

CT = "1.2.840.10008.5.1.4.1.1.2"


def _archive_reporting_on_the_same_association() -> tuple[Any, list[int]]:
    """A pynetdicom Storage Commitment SCP that answers the N-ACTION, then reports on that association."""
    answers: list[int] = []
    response_sent = threading.Event()

    def on_sent(event: Any) -> None:
        if type(event.message).__name__ == "N_ACTION_RSP":
            response_sent.set()

    def on_action(event: Any) -> tuple[int, None]:
        request = event.action_information
        assoc = event.assoc

        def report() -> None:
            # Report only once the N-ACTION response has gone out (PS3.4 J.3.3 order).
            if not response_sent.wait(10):
                return
            ds = Dataset()
            ds.TransactionUID = request.TransactionUID
            ds.ReferencedSOPSequence = Sequence(list(request.ReferencedSOPSequence))
            status, _ = assoc.send_n_event_report(ds, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID)
            answers.append(int(status.Status) if status is not None and "Status" in status else -1)

        threading.Thread(target=report, daemon=True).start()
        return 0x0000, None

    ae = AE(ae_title="ARCHIVE")
    ae.add_supported_context(StorageCommitmentPushModel)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_ACTION, on_action), (evt.EVT_DIMSE_SENT, on_sent)])
    return server, answers


def test_report_on_the_n_action_association_is_applied() -> None:
    """With report_wait > 0 the guard keeps the association open and receives the report on it."""
    server, answers = _archive_reporting_on_the_same_association()
    got: list[Report] = []
    try:
        request_commitment(
            "GUARD",
            Peer("ARCHIVE", "127.0.0.1", int(server.server_address[1])),
            transaction_uid="1.2.3.4.5",
            references=[(CT, "1.2.3.4.5.1"), (CT, "1.2.3.4.5.2")],
            timeout=10,
            report_wait=5,
            on_report=lambda report, _ae: got.append(report),
        )
        wait_until(lambda: answers, 5, message="the archive got no answer to its report")
    finally:
        server.shutdown()
    assert answers == [0x0000]
    assert [(r.transaction_uid, sorted(r.successes), r.failures) for r in got] == [("1.2.3.4.5", ["1.2.3.4.5.1", "1.2.3.4.5.2"], [])]
