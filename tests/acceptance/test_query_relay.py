"""C-FIND through the guard: DCMTK findscu gets what the Orthanc archive answers, streamed, audited."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification  # type: ignore[attr-defined]

from tests.support.dcmtk import DcmtkError, findscu, store_responses, storescu
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.qr import archive_with_studies, canonical
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.acceptance.conftest import GuardFactory
    from tests.support.fixtures import StudyFactory
    from tests.support.orthanc import Orthanc

pytestmark = pytest.mark.interop

STUDY_KEYS = {
    "StudyInstanceUID": "",
    "PatientID": "",
    "PatientName": "",
    "StudyDate": "",
    "ModalitiesInStudy": "",
    "NumberOfStudyRelatedInstances": "",
}
SERIES_KEYS = {"SeriesInstanceUID": "", "Modality": "", "SeriesNumber": "", "NumberOfSeriesRelatedInstances": ""}
IMAGE_KEYS = {"SOPInstanceUID": "", "SOPClassUID": "", "InstanceNumber": ""}


def _both(guard: GuardProcess, archive: Orthanc, level: str, keys: dict[str, str], model: str = "-S") -> tuple[list[str], list[str]]:
    """The same query to the guard and directly to the archive, as comparable identifiers."""
    via_guard = findscu("127.0.0.1", guard.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE, level=level, keys=keys, model=model)
    direct = findscu("127.0.0.1", archive.dicom_port, calling_ae=SOURCE_AE, called_ae=archive.aet, level=level, keys=keys, model=model)
    assert all(str(ds.get("RetrieveAETitle", GUARD_AE)) == GUARD_AE for ds in via_guard), (
        "the guard must name itself as the place to retrieve from"
    )
    return canonical(via_guard), canonical(direct)


def test_findscu_through_the_guard_matches_the_archive_at_every_level(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Findscu at STUDY, SERIES and IMAGE level (Study Root), and Patient Root, returns exactly what the archive returns directly."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port)
    studies = archive_with_studies(orthanc_archive, guard, synthetic_study, [(3, 2, "PAT-A"), (2, 1, "PAT-B")])
    guard.start()
    first = studies[0]

    via_guard, direct = _both(guard, orthanc_archive, "STUDY", STUDY_KEYS)
    assert len(direct) == 2
    assert via_guard == direct

    via_guard, direct = _both(guard, orthanc_archive, "SERIES", {"StudyInstanceUID": first.study_uid, **SERIES_KEYS})
    assert len(direct) == 2
    assert via_guard == direct

    image_keys = {"StudyInstanceUID": first.study_uid, "SeriesInstanceUID": first.series_uids[0], **IMAGE_KEYS}
    via_guard, direct = _both(guard, orthanc_archive, "IMAGE", image_keys)
    assert len(direct) == 2  # 3 instances over 2 series: 2 in the first
    assert via_guard == direct

    via_guard, direct = _both(guard, orthanc_archive, "STUDY", {"PatientID": "PAT-B", "StudyInstanceUID": ""}, model="-P")
    assert len(direct) == 1
    assert via_guard == direct

    records = guard.audit_records("query.relayed")
    assert [(r["detail"]["query_level"], r["detail"]["matches"], r["outcome"]) for r in records] == [
        ("STUDY", 2, "success"),
        ("SERIES", 2, "success"),
        ("IMAGE", 2, "success"),
        ("STUDY", 1, "success"),
    ]
    assert records[1]["study_uid"] == first.study_uid
    assert records[3]["detail"]["model"] == "patient-root"
    assert all(r["actor"] == SOURCE_AE and r["detail"]["answered_by"] == "archive" for r in records)


def test_archive_unreachable_is_out_of_resources_and_audited(guard_factory: GuardFactory, orthanc_archive: Orthanc) -> None:
    """With the archive down, a relayed C-FIND fails with 0xA700, never an empty Success, and the audit says why."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port)
    orthanc_archive.stop()
    guard.start()
    with pytest.raises(DcmtkError) as failure:
        findscu("127.0.0.1", guard.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE, level="STUDY", keys=STUDY_KEYS)
    assert "Received Final Find Response (Refused: OutOfResources)" in failure.value.result.stdout + failure.value.result.stderr
    [record] = guard.audit_records("query.relayed")
    assert record["outcome"] == "failure"
    assert record["detail"]["status"] == "0xA700"
    assert "association" in record["detail"]["error"]


def test_ledger_answers_when_the_archive_is_down_and_fallback_is_on(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """query.ledger_fallback: with the archive down, the guard answers from what it received, and the audit says answered_by ledger."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port, query={"ledger_fallback": True})
    guard.start()
    study = synthetic_study(3, patient_id="PAT-L", series_per_study=2)
    result = storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert store_responses(result) == ["Success"] * 3
    orthanc_archive.stop()
    answers = findscu(
        "127.0.0.1",
        guard.port,
        calling_ae=SOURCE_AE,
        called_ae=GUARD_AE,
        level="SERIES",
        keys={"StudyInstanceUID": study.study_uid, "SeriesInstanceUID": "", "Modality": "", "NumberOfSeriesRelatedInstances": ""},
    )
    assert sorted((str(a.SeriesInstanceUID), str(a.Modality), int(a.NumberOfSeriesRelatedInstances)) for a in answers) == sorted(
        [(study.series_uids[0], "CT", 2), (study.series_uids[1], "CT", 1)]
    )
    [record] = guard.audit_records("query.relayed")
    assert record["detail"]["answered_by"] == "ledger"
    assert record["detail"]["matches"] == 2
    assert "association" in record["detail"]["error"]


class _SlowArchive:
    """A scripted Study Root FIND SCP: answers one match, then waits (bounded) for the C-CANCEL the guard must pass on."""

    def __init__(self) -> None:
        self.saw_cancel = threading.Event()
        ae = AE(ae_title="ARCHIVE")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(Verification)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, self._on_find)])
        self.port = int(self.server.server_address[1])

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        match = Dataset()
        match.QueryRetrieveLevel = "STUDY"
        match.StudyInstanceUID = "1.2.3.4"
        yield 0xFF00, match
        if wait_until(lambda: event.is_cancelled, 10, interval=0.02, message="no C-CANCEL reached the archive"):
            self.saw_cancel.set()
            yield 0xFE00, None

    def stop(self) -> None:
        self.server.shutdown()


def test_c_cancel_reaches_the_archive_while_it_is_still_searching(guard_factory: GuardFactory) -> None:
    """A C-CANCEL after the first match is passed on at once to an archive that has nothing more to say yet; the answer is Cancel."""
    archive = _SlowArchive()
    try:
        guard = guard_factory(archive_port=archive.port).start()
        ae = AE(ae_title=SOURCE_AE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", guard.port, ae_title=GUARD_AE)
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        statuses = []
        try:
            for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind, msg_id=3):
                statuses.append(int(status.Status))
                if int(status.Status) == 0xFF00:
                    assoc.send_c_cancel(3, assoc.accepted_contexts[0].context_id)
        finally:
            assoc.release()
        assert statuses == [0xFF00, 0xFE00]
        assert archive.saw_cancel.is_set()
        [record] = guard.audit_records("query.relayed")
        assert (record["detail"]["cancelled"], record["detail"]["matches"], record["detail"]["status"]) == (True, 1, "0xFE00")
    finally:
        archive.stop()
