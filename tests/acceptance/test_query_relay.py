"""C-FIND through the guard: DCMTK findscu gets what the Orthanc archive answers, streamed, audited."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.support.dcmtk import DcmtkError, findscu, store_responses, storescu
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.qr import archive_with_studies, canonical

if TYPE_CHECKING:
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
