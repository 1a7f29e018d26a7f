"""C-MOVE through the guard: the archive moves to the guard, the guard relays each instance to the destination."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from tests.support.dcmtk import failed_sop_instance_uids, move_responses, movescu
from tests.support.fixtures import STORESCP_AET
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.ports import free_port
from tests.support.qr import archive_with_studies
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from tests.acceptance.conftest import GuardFactory
    from tests.support.datasets import Study
    from tests.support.dcmtk import Storescp
    from tests.support.fixtures import StudyFactory
    from tests.support.orthanc import Orthanc

pytestmark = pytest.mark.interop

PENDING, SUCCESS, WARNING, CANCEL, UNKNOWN_DESTINATION = 0xFF00, 0x0000, 0xB000, 0xFE00, 0xA801


def _relay(
    guard_factory: GuardFactory, archive: Orthanc, storescp: Storescp, factory: StudyFactory, count: int, series: int = 1
) -> tuple[GuardProcess, Study]:
    """A guard whose archive holds one study of ``count`` instances, with the storescp as a configured destination."""
    guard = guard_factory(
        archive_port=archive.dicom_port, destinations=[{"ae_title": STORESCP_AET, "host": "127.0.0.1", "port": storescp.port}]
    )
    [study] = archive_with_studies(archive, guard, factory, [(count, series, "PAT-M")])
    guard.start()
    return guard, study


def _move(guard: GuardProcess, level: str, keys: dict[str, str], destination: str = STORESCP_AET) -> Any:
    return movescu(
        "127.0.0.1", guard.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE, move_destination=destination, level=level, keys=keys, debug=True
    )


def _temporary_files(guard: GuardProcess) -> list[str]:
    """Files left in the spool's folder for data sets being received."""
    return sorted(p.name for p in (guard.data_dir / "spool" / ".incoming").iterdir())


def _final(responses: list[dict[str, int]]) -> dict[str, int]:
    """The final response without Number of Remaining (pynetdicom includes it as 0; only pending responses must)."""
    return {k: v for k, v in responses[-1].items() if k != "remaining"}


def test_movescu_through_the_guard_delivers_every_instance_with_right_counts(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, storescp_peer: Storescp, synthetic_study: StudyFactory
) -> None:
    """A STUDY-level C-MOVE to a storescp: every instance arrives, each pending response counts one more, the final says Success."""
    guard, study = _relay(guard_factory, orthanc_archive, storescp_peer, synthetic_study, 8, series=2)
    result = _move(guard, "STUDY", {"StudyInstanceUID": study.study_uid})
    responses = move_responses(result)
    assert _final(responses) == {"status": SUCCESS, "completed": 8, "failed": 0, "warning": 0}, result.stdout
    pending = responses[:-1]
    assert [r["status"] for r in pending] == [PENDING] * 8
    assert [(r["remaining"], r["completed"], r["failed"], r["warning"]) for r in pending] == [(8 - i, i, 0, 0) for i in range(1, 9)]
    assert storescp_peer.wait_for(study.sop_instance_uids) == set(study.sop_instance_uids)
    assert len(storescp_peer.received_files()) == 8  # each exactly once
    assert guard.instance_states() == {}, "relayed instances must not be ingested or queued for forwarding"
    assert _temporary_files(guard) == [], "every relayed instance's temporary file is removed once sent"
    [record] = guard.audit_records("move.relayed")
    assert record["outcome"] == "success"
    assert record["study_uid"] == study.study_uid
    detail = record["detail"]
    assert (detail["destination"], detail["expected"], detail["completed"], detail["failed"], detail["status"]) == (
        STORESCP_AET,
        8,
        8,
        0,
        "0x0000",
    )


def test_an_instance_missing_in_the_archive_is_a_failed_sub_operation(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, storescp_peer: Storescp, synthetic_study: StudyFactory
) -> None:
    """IMAGE level, three SOP Instance UIDs of which the archive lacks one: 0xB000, two completed, one failed and listed."""
    guard, study = _relay(guard_factory, orthanc_archive, storescp_peer, synthetic_study, 3)
    present = study.sop_instance_uids[:2]
    assert orthanc_archive.delete_instance(study.sop_instance_uids[2])
    missing = str(generate_uid())
    keys = {
        "StudyInstanceUID": study.study_uid,
        "SeriesInstanceUID": study.series_uids[0],
        "SOPInstanceUID": "\\".join([*present, missing]),
    }
    result = _move(guard, "IMAGE", keys)
    final = _final(move_responses(result))
    assert final == {"status": WARNING, "completed": 2, "failed": 1, "warning": 0}, result.stdout
    assert failed_sop_instance_uids(result) == [missing]
    assert storescp_peer.wait_for(present) == set(present)
    [record] = guard.audit_records("move.relayed")
    assert record["outcome"] == "failure"
    assert record["detail"]["failed_sop_instance_uids"] == [missing]
    assert record["detail"]["status"] == "0xB000"


def test_unknown_destination_is_refused_with_a801_and_audited(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, storescp_peer: Storescp, synthetic_study: StudyFactory
) -> None:
    """A Move Destination that is no configured peer gets 0xA801, nothing is moved, and the refusal is audited."""
    guard, study = _relay(guard_factory, orthanc_archive, storescp_peer, synthetic_study, 2)
    result = _move(guard, "STUDY", {"StudyInstanceUID": study.study_uid}, destination="NOWHERE")
    assert move_responses(result)[-1]["status"] == UNKNOWN_DESTINATION, result.stdout
    [record] = guard.audit_records("move.relayed")
    assert record["outcome"] == "refused"
    assert record["detail"]["reason"] == "unknown-destination"
    assert record["detail"]["destination"] == "NOWHERE"
    assert record["actor"] == SOURCE_AE
    assert storescp_peer.received_files() == []


def test_c_cancel_stops_a_long_move_and_is_answered_cancel(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, storescp_peer: Storescp, synthetic_study: StudyFactory
) -> None:
    """A C-CANCEL after a few sub-operations ends the relay: final status Cancel, the rest left remaining and never sent."""
    total = 300
    guard, study = _relay(guard_factory, orthanc_archive, storescp_peer, synthetic_study, total)
    ae = AE(ae_title=SOURCE_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", guard.port, ae_title=GUARD_AE)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study.study_uid
    final: Dataset | None = None
    try:
        for status, _ in assoc.send_c_move(query, STORESCP_AET, StudyRootQueryRetrieveInformationModelMove, msg_id=7):
            assert status is not None
            if int(status.Status) != PENDING:
                final = status
                break
            if int(status.NumberOfCompletedSuboperations) == 5:
                assoc.send_c_cancel(7, assoc.accepted_contexts[0].context_id)
    finally:
        assoc.release()
    assert final is not None
    assert int(final.Status) == CANCEL
    completed, remaining = int(final.NumberOfCompletedSuboperations), int(final.NumberOfRemainingSuboperations)
    assert completed >= 5
    assert remaining > 0
    assert completed + remaining + int(final.NumberOfFailedSuboperations) == total
    wait_until(lambda: len(storescp_peer.received_files()) >= completed, 10, message="storescp did not finish writing")
    assert len(storescp_peer.received_files()) == completed
    wait_until(lambda: _temporary_files(guard) == [], 10, message="temporary files of the cancelled relay left behind")
    [record] = guard.audit_records("move.relayed")
    assert record["detail"]["cancelled"] is True
    assert record["detail"]["status"] == "0xFE00"


def test_requester_abort_mid_move_ends_the_relay_cleanly(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, storescp_peer: Storescp, synthetic_study: StudyFactory
) -> None:
    """A-ABORT from the requester mid-move: the relay stops, leaves no temporary file, audits a failure; the guard serves on."""
    total = 300
    guard = guard_factory(
        archive_port=orthanc_archive.dicom_port, destinations=[{"ae_title": STORESCP_AET, "host": "127.0.0.1", "port": storescp_peer.port}]
    )
    study, small = archive_with_studies(orthanc_archive, guard, synthetic_study, [(total, 1, "PAT-M"), (3, 1, "PAT-S")])
    guard.start()
    ae = AE(ae_title=SOURCE_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", guard.port, ae_title=GUARD_AE)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study.study_uid
    for status, _ in assoc.send_c_move(query, STORESCP_AET, StudyRootQueryRetrieveInformationModelMove):
        if status is not None and int(status.get("NumberOfCompletedSuboperations", 0)) >= 5:
            assoc.abort()
            break
    records = wait_until(lambda: guard.audit_records("move.relayed"), 30, message="the aborted relay was not audited")
    assert records[0]["outcome"] == "failure"
    assert records[0]["detail"]["error"] == "requester association ended"
    wait_until(lambda: _temporary_files(guard) == [], 30, message="temporary files of the aborted relay left behind")
    assert len(storescp_peer.received_files()) < total
    result = _move(guard, "STUDY", {"StudyInstanceUID": small.study_uid})
    assert _final(move_responses(result))["completed"] == 3, "the guard must relay again after an aborted move"
    assert storescp_peer.wait_for(small.sop_instance_uids) >= set(small.sop_instance_uids)


def test_destination_not_listening_is_a801_and_audited(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """A configured destination nobody answers at: 0xA801 (PS3.4 C.4.2.1.5), no move asked of the archive, a failure audited."""
    guard = guard_factory(
        archive_port=orthanc_archive.dicom_port, destinations=[{"ae_title": STORESCP_AET, "host": "127.0.0.1", "port": free_port()}]
    )
    [study] = archive_with_studies(orthanc_archive, guard, synthetic_study, [(2, 1, "PAT-U")])
    guard.start()
    result = _move(guard, "STUDY", {"StudyInstanceUID": study.study_uid})
    assert move_responses(result)[-1]["status"] == UNKNOWN_DESTINATION, result.stdout
    [record] = wait_until(lambda: guard.audit_records("move.relayed"), 10, message="not audited")
    assert (record["outcome"], record["detail"]["error"]) == ("failure", "cannot associate with the destination")


def test_patient_root_move_is_relayed_too(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, storescp_peer: Storescp, synthetic_study: StudyFactory
) -> None:
    """Patient Root MOVE at PATIENT level: every instance of the patient's study reaches the destination."""
    guard, study = _relay(guard_factory, orthanc_archive, storescp_peer, synthetic_study, 3)
    result = movescu(
        "127.0.0.1",
        guard.port,
        calling_ae=SOURCE_AE,
        called_ae=GUARD_AE,
        move_destination=STORESCP_AET,
        level="PATIENT",
        keys={"PatientID": "PAT-M"},
        model="-P",
        debug=True,
    )
    assert _final(move_responses(result)) == {"status": SUCCESS, "completed": 3, "failed": 0, "warning": 0}, result.stdout
    assert storescp_peer.wait_for(study.sop_instance_uids) == set(study.sop_instance_uids)
    [record] = guard.audit_records("move.relayed")
    assert (record["patient_id"], record["detail"]["model"], record["detail"]["query_level"]) == ("PAT-M", "patient-root", "PATIENT")


class _PickyDestination:
    """A scripted storage SCP that refuses one chosen instance with 0xA700 and keeps the rest."""

    def __init__(self, refuse: str) -> None:
        self.refuse = refuse
        self.stored: list[str] = []
        ae = AE(ae_title=STORESCP_AET)
        ae.add_supported_context(CTImageStorage, ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = int(self.server.server_address[1])

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid == self.refuse:
            return 0xA700
        self.stored.append(uid)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def test_an_instance_the_destination_refuses_is_a_failed_sub_operation(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """The destination answers 0xA700 to one instance: the relay goes on, the final is 0xB000 naming that instance."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port)
    [study] = archive_with_studies(orthanc_archive, guard, synthetic_study, [(4, 1, "PAT-R")])
    refused = study.sop_instance_uids[1]
    destination = _PickyDestination(refused)
    try:
        guard.config["destinations"] = [{"ae_title": STORESCP_AET, "host": "127.0.0.1", "port": destination.port}]
        guard.start()
        result = _move(guard, "STUDY", {"StudyInstanceUID": study.study_uid})
        assert _final(move_responses(result)) == {"status": WARNING, "completed": 3, "failed": 1, "warning": 0}, result.stdout
        assert failed_sop_instance_uids(result) == [refused]
        assert sorted(destination.stored) == sorted(set(study.sop_instance_uids) - {refused})
        [record] = guard.audit_records("move.relayed")
        assert (record["detail"]["failed_sop_instance_uids"], record["detail"]["archive_status"]) == ([refused], "0x0000")
    finally:
        destination.stop()


def test_the_relay_names_the_nodes_own_relay_ae_title_as_move_destination(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, storescp_peer: Storescp, synthetic_study: StudyFactory
) -> None:
    """With node.relay_ae_title the archive is asked to move to that AE title (this node's own port): every instance arrives.

    The archive knows the shared AE title GUARD at another address (a load balancer's; here a port
    nobody listens on): sub-operations reach the node only through its own relay entry.
    """
    guard = guard_factory(
        archive_port=orthanc_archive.dicom_port,
        destinations=[{"ae_title": STORESCP_AET, "host": "127.0.0.1", "port": storescp_peer.port}],
        node={"relay_ae_title": "GUARD-A"},
    )
    orthanc_archive.add_modality("guard", GUARD_AE, "127.0.0.1", free_port())
    orthanc_archive.add_modality("guard-a", "GUARD-A", "127.0.0.1", guard.port)
    orthanc_archive.add_modality("scu", SOURCE_AE, "127.0.0.1", 1)
    study = synthetic_study(3, patient_id="PAT-R")
    orthanc_archive.upload(study.paths)
    guard.start()
    result = _move(guard, "STUDY", {"StudyInstanceUID": study.study_uid})
    assert _final(move_responses(result)) == {"status": SUCCESS, "completed": 3, "failed": 0, "warning": 0}, result.stdout
    assert set(study.sop_instance_uids) == storescp_peer.wait_for(study.sop_instance_uids)
