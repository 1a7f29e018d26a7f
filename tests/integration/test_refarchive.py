"""The reference archive as a peer that proves what it holds: C-FIND, C-GET, Storage Commitment, partial keeping."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
)
from pynetdicom.transport import ThreadedAssociationServer

from guard.config.verify import CompareMode
from guard.dicom.commitment import find_study_instances, request_commitment
from guard.dicom.net import NODELAY_HANDLER, Peer
from guard.dicom.retrieve import CGetRetriever
from guard.domain import status as st
from guard.domain.comparison import exact_digest
from guard.sandbox.archive import COMMITMENT_INSTANCE_UID, ReferenceArchive
from tests.support.datasets import Study, make_study
from tests.support.dcmtk import findscu
from tests.support.fixtures import require_tools
from tests.support.ports import LOOPBACK, free_port
from tests.support.scu import send_files
from tests.support.waiting import wait_until

REQUESTER_AE = "REQUESTER"
CT = "1.2.840.10008.5.1.4.1.1.2"
WAIT = 10.0


@dataclass
class Received:
    """One N-EVENT-REPORT as the requester's listener saw it."""

    calling_ae: str
    event_type: int
    transaction_uid: str
    successes: list[str]
    failures: list[tuple[str, int]]
    archive_requested_association: bool


@dataclass
class Requester:
    """A Storage Commitment requester: an SCU that sends N-ACTION and a listener for the reports."""

    server: ThreadedAssociationServer
    reports: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.reports)

    def report_for(self, transaction_uid: str) -> Received | None:
        return next((r for r in self.snapshot() if r.transaction_uid == transaction_uid), None)


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[ReferenceArchive]:
    """A running reference archive in this process."""
    ref = ReferenceArchive(tmp_path / "archive", ae_title="ARCHIVE").start()
    yield ref
    ref.stop()


@pytest.fixture
def requester(archive: ReferenceArchive) -> Iterator[Requester]:
    """A listener that accepts the archive's reports (archive as SCP by role selection), known to the archive."""
    holder: dict[str, Requester] = {}

    def on_report(event: Any) -> tuple[int, Dataset | None]:
        info = event.event_information
        received = Received(
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
            event_type=int(event.event_type),
            transaction_uid=str(info.TransactionUID),
            successes=[str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])],
            failures=[(str(i.ReferencedSOPInstanceUID), int(i.FailureReason)) for i in info.get("FailedSOPSequence", [])],
            archive_requested_association=event.assoc.is_acceptor,
        )
        with holder["r"].lock:
            holder["r"].reports.append(received)
        return st.SUCCESS, None

    ae = AE(ae_title=REQUESTER_AE)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = ae.start_server((LOOPBACK, 0), block=False, evt_handlers=[NODELAY_HANDLER, (evt.EVT_N_EVENT_REPORT, on_report)])
    assert server is not None
    holder["r"] = Requester(server)
    archive.add_requester(REQUESTER_AE, LOOPBACK, holder["r"].port)
    yield holder["r"]
    server.shutdown()


def _store(archive: ReferenceArchive, study: Study) -> list[int | None]:
    results = send_files(archive.port, study.paths, called_ae=archive.ae_title)
    return [status for _, status in results]


def _find(
    archive: ReferenceArchive, query: Dataset, model: str = StudyRootQueryRetrieveInformationModelFind
) -> tuple[int | None, list[Dataset]]:
    """Run a C-FIND; return the final status (None if the association failed) and the pending identifiers."""
    ae = AE(ae_title="FINDSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = WAIT
    ae.add_requested_context(model)
    assoc = ae.associate(LOOPBACK, archive.port, ae_title=archive.ae_title)
    if not assoc.is_established:
        return None, []
    found: list[Dataset] = []
    final: int | None = None
    try:
        for status, identifier in assoc.send_c_find(query, model):
            if status is None or "Status" not in status:
                break
            if int(status.Status) in {0xFF00, 0xFF01}:
                assert identifier is not None
                found.append(identifier)
            else:
                final = int(status.Status)
    finally:
        if assoc.is_established:
            assoc.release()
    return final, found


def _query(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _request_commitment(
    archive: ReferenceArchive, uids: list[str], *, calling_ae: str = REQUESTER_AE, sop_class: str = CT
) -> tuple[str, int | None]:
    """Send an N-ACTION for ``uids``; return the Transaction UID and the answer (None: no answer, e.g. aborted)."""
    transaction_uid = str(generate_uid())
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for uid in uids:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = uid
        items.append(item)
    ds.ReferencedSOPSequence = Sequence(items)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = WAIT
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(LOOPBACK, archive.port, ae_title=archive.ae_title)
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(ds, 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID)
    finally:
        if assoc.is_established:
            assoc.release()
    return transaction_uid, (int(status.Status) if status is not None and "Status" in status else None)


def _wait_report(requester: Requester, transaction_uid: str) -> Received:
    report = wait_until(lambda: requester.report_for(transaction_uid), WAIT, message=f"no report for {transaction_uid}")
    assert report is not None
    return report


@pytest.mark.parametrize("chunked", [False, True], ids=["in-memory", "chunked-to-disk"])
def test_find_image_level_returns_exactly_the_held_instances(
    archive: ReferenceArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    """IMAGE-level C-FIND by StudyInstanceUID lists every held instance once, however pynetdicom received it."""
    monkeypatch.setattr(pynetdicom_config, "STORE_RECV_CHUNKED_DATASET", chunked)
    study = make_study(tmp_path / "study", 4, series_per_study=2)
    other = make_study(tmp_path / "other", 2, patient_id="PAT002")
    assert _store(archive, study) == [st.SUCCESS] * 4
    assert _store(archive, other) == [st.SUCCESS] * 2

    final, found = _find(archive, _query("IMAGE", StudyInstanceUID=study.study_uid, SeriesInstanceUID="", SOPInstanceUID=""))

    assert final == st.SUCCESS
    uids = [str(ds.SOPInstanceUID) for ds in found]
    assert sorted(uids) == sorted(study.sop_instance_uids)
    assert {str(ds.SeriesInstanceUID) for ds in found} == set(study.series_uids)
    assert all(ds.QueryRetrieveLevel == "IMAGE" for ds in found)


def test_find_list_of_uid_matching_on_sop_instance_uid(archive: ReferenceArchive, tmp_path: Path) -> None:
    """A backslash list of SOP Instance UIDs matches each listed UID that is held, and nothing else."""
    study = make_study(tmp_path / "study", 4)
    _store(archive, study)
    wanted = [study.sop_instance_uids[0], study.sop_instance_uids[2], "1.2.3.4.5.6.7.8.9"]

    final, found = _find(archive, _query("IMAGE", StudyInstanceUID=study.study_uid, SOPInstanceUID="\\".join(wanted)))

    assert final == st.SUCCESS
    assert sorted(str(ds.SOPInstanceUID) for ds in found) == sorted(wanted[:2])


def test_find_study_and_patient_levels_return_one_match_each(archive: ReferenceArchive, tmp_path: Path) -> None:
    """STUDY level gives one answer per study with its counts; Patient Root PATIENT level one per patient."""
    study = make_study(tmp_path / "study", 3, series_per_study=2)
    _store(archive, study)

    final, found = _find(
        archive,
        _query(
            "STUDY",
            StudyInstanceUID=study.study_uid,
            PatientName="",
            AccessionNumber="",
            NumberOfStudyRelatedInstances="",
            NumberOfStudyRelatedSeries="",
            ModalitiesInStudy="",
            StudyDescription="",
        ),
    )
    assert final == st.SUCCESS
    assert len(found) == 1
    answer = found[0]
    assert answer.StudyInstanceUID == study.study_uid
    assert str(answer.PatientName) == "TEST^PAT001"
    assert answer.AccessionNumber.startswith("A")
    assert int(answer.NumberOfStudyRelatedInstances) == 3
    assert int(answer.NumberOfStudyRelatedSeries) == 2
    assert answer.ModalitiesInStudy == "CT"
    assert "StudyDescription" in answer  # a return key the file lacks comes back empty
    assert not answer.StudyDescription

    final, found = _find(archive, _query("PATIENT", PatientID="PAT0*", PatientName=""), PatientRootQueryRetrieveInformationModelFind)
    assert final == st.SUCCESS
    assert [str(ds.PatientID) for ds in found] == ["PAT001"]

    final, found = _find(archive, _query("PATIENT", PatientID="PAT001"))
    assert final == 0xA900  # PATIENT level does not exist in Study Root
    assert found == []


def test_find_reads_the_folder_at_start_and_forgets(archive: ReferenceArchive, tmp_path: Path) -> None:
    """A restarted archive answers from the files already in its folder; forget() removes file and index entry."""
    study = make_study(tmp_path / "study", 3)
    _store(archive, study)
    archive.stop()
    again = ReferenceArchive(archive.directory, ae_title="ARCHIVE").start()
    try:
        query = _query("IMAGE", StudyInstanceUID=study.study_uid, SOPInstanceUID="")
        final, found = _find(again, query)
        assert final == st.SUCCESS
        assert sorted(str(ds.SOPInstanceUID) for ds in found) == sorted(study.sop_instance_uids)

        assert again.forget(study.sop_instance_uids[1])
        assert not again.forget(study.sop_instance_uids[1])
        assert not again.holds(study.sop_instance_uids[1])
        _, found = _find(again, query)
        assert sorted(str(ds.SOPInstanceUID) for ds in found) == sorted(set(study.sop_instance_uids) - {study.sop_instance_uids[1]})
    finally:
        again.stop()


def test_find_faults(archive: ReferenceArchive, tmp_path: Path) -> None:
    """find_status answers C-FIND with that failure; abort aborts the association; clear() restores answers."""
    study = make_study(tmp_path / "study", 2)
    _store(archive, study)
    query = _query("IMAGE", StudyInstanceUID=study.study_uid, SOPInstanceUID="")

    archive.faults.find_status = 0xA700
    assert _find(archive, query) == (0xA700, [])

    archive.faults.clear()
    archive.faults.abort = True
    assert _find(archive, query) == (None, [])

    archive.faults.clear()
    final, found = _find(archive, query)
    assert final == st.SUCCESS
    assert len(found) == 2


@pytest.mark.interop
def test_dcmtk_findscu_lists_the_held_instances(archive: ReferenceArchive, tmp_path: Path) -> None:
    """DCMTK findscu (Study Root, IMAGE level) gets the same SOP Instance UIDs from the archive."""
    require_tools("findscu")
    study = make_study(tmp_path / "study", 3)
    _store(archive, study)

    answers = findscu(
        LOOPBACK,
        archive.port,
        calling_ae="FINDSCU",
        called_ae=archive.ae_title,
        level="IMAGE",
        keys={"StudyInstanceUID": study.study_uid, "SOPInstanceUID": ""},
    )

    assert sorted(str(ds.SOPInstanceUID) for ds in answers) == sorted(study.sop_instance_uids)


def test_commitment_report_comes_on_a_new_association_with_failures(
    archive: ReferenceArchive, requester: Requester, tmp_path: Path
) -> None:
    """The N-EVENT-REPORT comes on an association the archive opens; forgotten or never-sent instances fail with 0x0112."""
    study = make_study(tmp_path / "study", 3)
    _store(archive, study)
    archive.forget(study.sop_instance_uids[0])
    never_sent = str(generate_uid())

    transaction_uid, answer = _request_commitment(archive, [*study.sop_instance_uids, never_sent])

    assert answer == st.SUCCESS
    report = _wait_report(requester, transaction_uid)
    assert report.archive_requested_association
    assert report.calling_ae == archive.ae_title
    assert report.event_type == 2
    assert sorted(report.successes) == sorted(study.sop_instance_uids[1:])
    assert sorted(report.failures) == sorted([(study.sop_instance_uids[0], 0x0112), (never_sent, 0x0112)])
    wait_until(lambda: archive.reports_sent, WAIT, message="report not recorded")
    sent = archive.reports_sent[0]
    assert (sent.transaction_uid, sent.status) == (transaction_uid, st.SUCCESS)
    assert sorted(sent.failed) == sorted([study.sop_instance_uids[0], never_sent])


def test_commitment_all_held_is_event_type_1(archive: ReferenceArchive, requester: Requester, tmp_path: Path) -> None:
    """When every referenced instance is held the report is Event Type 1 with no failures."""
    study = make_study(tmp_path / "study", 3)
    _store(archive, study)

    transaction_uid, answer = _request_commitment(archive, study.sop_instance_uids)

    assert answer == st.SUCCESS
    report = _wait_report(requester, transaction_uid)
    assert (report.event_type, sorted(report.successes), report.failures) == (1, sorted(study.sop_instance_uids), [])


def test_drop_every_second_instance_keeps_half(archive: ReferenceArchive, requester: Requester, tmp_path: Path) -> None:
    """drop_every=2 answers Success to all but keeps only the odd-numbered instances, and commitment tells."""
    archive.faults.drop_every = 2
    study = make_study(tmp_path / "study", 4)

    assert _store(archive, study) == [st.SUCCESS] * 4

    kept = set(study.sop_instance_uids[0::2])
    assert archive.held_uids() == kept
    assert archive.received_count == 4
    transaction_uid, _ = _request_commitment(archive, study.sop_instance_uids)
    report = _wait_report(requester, transaction_uid)
    assert set(report.successes) == kept
    assert {uid for uid, _ in report.failures} == set(study.sop_instance_uids[1::2])


def test_commit_lie_reports_everything_committed(archive: ReferenceArchive, requester: Requester, tmp_path: Path) -> None:
    """An archive that lies reports success for instances it never kept; only C-FIND shows they are missing."""
    archive.faults.drop = True
    archive.faults.commit_lie = True
    study = make_study(tmp_path / "study", 2)
    _store(archive, study)

    transaction_uid, _ = _request_commitment(archive, study.sop_instance_uids)

    report = _wait_report(requester, transaction_uid)
    assert (report.event_type, sorted(report.successes), report.failures) == (1, sorted(study.sop_instance_uids), [])
    assert _find(archive, _query("IMAGE", StudyInstanceUID=study.study_uid, SOPInstanceUID="")) == (st.SUCCESS, [])


def test_commit_silent_and_commit_status_send_no_report(archive: ReferenceArchive, requester: Requester, tmp_path: Path) -> None:
    """commit_silent answers Success but never reports; commit_status answers that failure; neither reports."""
    study = make_study(tmp_path / "study", 1)
    _store(archive, study)

    archive.faults.commit_silent = True
    silent_uid, silent_answer = _request_commitment(archive, study.sop_instance_uids)
    archive.faults.clear()
    archive.faults.commit_status = 0x0110
    failed_uid, failed_answer = _request_commitment(archive, study.sop_instance_uids)
    archive.faults.clear()
    # A later, normal request is reported: had the others been scheduled, they would have come first.
    normal_uid, _ = _request_commitment(archive, study.sop_instance_uids)
    _wait_report(requester, normal_uid)

    assert (silent_answer, failed_answer) == (st.SUCCESS, 0x0110)
    assert [r.transaction_uid for r in requester.snapshot()] == [normal_uid]
    wait_until(lambda: archive.reports_sent, WAIT, message="report not recorded")
    assert [r.transaction_uid for r in archive.reports_sent] == [normal_uid]
    assert silent_uid != failed_uid


def test_unreachable_requester_counts_a_failed_report(archive: ReferenceArchive, tmp_path: Path) -> None:
    """A report the requester cannot receive is not retried but counted in reports_failed."""
    archive.add_requester(REQUESTER_AE, LOOPBACK, free_port())  # nothing listens there
    study = make_study(tmp_path / "study", 1)
    _store(archive, study)

    transaction_uid, answer = _request_commitment(archive, study.sop_instance_uids)

    assert answer == st.SUCCESS
    wait_until(lambda: archive.reports_failed == 1, WAIT, message="undelivered report not counted")
    undelivered = archive.reports_undelivered[0]
    assert (undelivered.transaction_uid, undelivered.status) == (transaction_uid, None)
    assert undelivered.error
    assert archive.reports_sent == []


def test_unknown_requester_is_aborted(archive: ReferenceArchive, requester: Requester, tmp_path: Path) -> None:
    """An AE title not in requesters gets an A-ABORT on its N-ACTION, as Orthanc does, and no report."""
    study = make_study(tmp_path / "study", 1)
    _store(archive, study)

    _, answer = _request_commitment(archive, study.sop_instance_uids, calling_ae="STRANGER")

    assert answer is None
    assert archive.unknown_requesters == ["STRANGER"]
    transaction_uid, _ = _request_commitment(archive, study.sop_instance_uids)
    _wait_report(requester, transaction_uid)
    wait_until(lambda: archive.reports_sent, WAIT, message="report not recorded")
    assert [r.transaction_uid for r in archive.reports_sent] == [transaction_uid]


def test_referenced_class_conflict_fails_with_0119(archive: ReferenceArchive, requester: Requester, tmp_path: Path) -> None:
    """A held instance referenced with another SOP Class UID is reported failed with 0x0119 (class-instance conflict)."""
    study = make_study(tmp_path / "study", 1)
    _store(archive, study)

    transaction_uid, _ = _request_commitment(archive, study.sop_instance_uids, sop_class="1.2.840.10008.5.1.4.1.1.4")

    report = _wait_report(requester, transaction_uid)
    assert (report.event_type, report.successes, report.failures) == (2, [], [(study.sop_instance_uids[0], 0x0119)])


def test_the_guards_own_clients_work_against_it(archive: ReferenceArchive, requester: Requester, tmp_path: Path) -> None:
    """guard.dicom.commitment' C-FIND and N-ACTION, as the guard uses them, get the archive's answers and report."""
    study = make_study(tmp_path / "study", 3)
    _store(archive, study)
    archive.forget(study.sop_instance_uids[2])
    peer = Peer(archive.ae_title, LOOPBACK, archive.port)

    assert find_study_instances(REQUESTER_AE, peer, study.study_uid, timeout=WAIT) == set(study.sop_instance_uids[:2])
    transaction_uid = str(generate_uid())
    request_commitment(
        REQUESTER_AE, peer, transaction_uid=transaction_uid, references=[(CT, u) for u in study.sop_instance_uids], timeout=WAIT
    )

    report = _wait_report(requester, transaction_uid)
    assert sorted(report.successes) == sorted(study.sop_instance_uids[:2])
    assert report.failures == [(study.sop_instance_uids[2], 0x0112)]


@pytest.mark.parametrize("chunked", [False, True], ids=["in-memory", "chunked-to-disk"])
def test_c_get_hands_back_each_held_instance_with_the_bytes_received(
    archive: ReferenceArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    """The guard's C-GET retriever gets every named instance the archive holds, its data set byte for byte; a forgotten one is absent."""
    monkeypatch.setattr(pynetdicom_config, "STORE_RECV_CHUNKED_DATASET", chunked)
    study = make_study(tmp_path / "study", 3)
    assert _store(archive, study) == [st.SUCCESS] * 3
    archive.forget(study.sop_instance_uids[2])
    kinds = {uid: (CT, str(ExplicitVRLittleEndian)) for uid in study.sop_instance_uids}
    retriever = CGetRetriever(
        REQUESTER_AE, Peer(archive.ae_title, LOOPBACK, archive.port), timeout=WAIT, compare=CompareMode.EXACT, kinds_of=lambda _: kinds
    )

    digests = retriever.digests(study.study_uid, study.series_uids[0], study.sop_instance_uids)

    expected = {uid: exact_digest([path.read_bytes()]) for uid, path in zip(study.sop_instance_uids[:2], study.paths[:2], strict=True)}
    assert dict(digests) == expected
