"""Smoke tests of the test-support layer itself against the real DCMTK and Orthanc tools."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.support.dcmtk import LOOPBACK, DcmtkError, echoscu, final_response, findscu, movescu, store_responses, storescu

if TYPE_CHECKING:
    from tests.support.dcmtk import Storescp
    from tests.support.fixtures import StudyFactory
    from tests.support.orthanc import Orthanc

pytestmark = pytest.mark.interop

SENDER_AET = "PACS"
FINDER_AET = "FINDSCU"


def test_storescu_to_orthanc_lists_exactly_the_sent_instances(
    orthanc_archive: Orthanc,
    synthetic_study: StudyFactory,
) -> None:
    """A 5-instance study sent by storescu to Orthanc is listed by REST as exactly those 5 SOP Instance UIDs."""
    study = synthetic_study(5)

    result = storescu(
        LOOPBACK,
        orthanc_archive.dicom_port,
        study.paths[0].parent,
        calling_ae=SENDER_AET,
        called_ae=orthanc_archive.aet,
    )

    assert result.returncode == 0, result.stderr
    assert store_responses(result) == ["Success"] * 5
    assert orthanc_archive.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids)
    assert orthanc_archive.count_instances() == 5


def test_orthanc_rejects_a_wrong_called_ae_title(orthanc_archive: Orthanc) -> None:
    """Orthanc checks the called AE title, so a misaddressed association fails."""
    assert echoscu(LOOPBACK, orthanc_archive.dicom_port, called_ae=orthanc_archive.aet).returncode == 0
    assert echoscu(LOOPBACK, orthanc_archive.dicom_port, called_ae="NOT-ARCHIVE").returncode != 0


def test_storescu_to_storescp_receives_every_instance(
    storescp_peer: Storescp,
    synthetic_study: StudyFactory,
) -> None:
    """A 5-instance study sent by storescu to storescp arrives there as 5 complete files."""
    study = synthetic_study(5, series_per_study=2)

    result = storescu(LOOPBACK, storescp_peer.port, study.paths, calling_ae=SENDER_AET, called_ae=storescp_peer.aet)

    assert result.returncode == 0, result.stderr
    assert storescp_peer.wait_for(study.sop_instance_uids, timeout=10) == set(study.sop_instance_uids)
    assert len(storescp_peer.received_datasets()) == 5


def test_findscu_at_image_level_returns_the_study_instances(
    orthanc_archive: Orthanc,
    synthetic_study: StudyFactory,
) -> None:
    """A Study Root C-FIND at IMAGE level against Orthanc returns the 5 stored SOP Instance UIDs."""
    study = synthetic_study(5)
    other = synthetic_study(2)
    for sent in (study, other):
        result = storescu(
            LOOPBACK,
            orthanc_archive.dicom_port,
            sent.paths,
            calling_ae=SENDER_AET,
            called_ae=orthanc_archive.aet,
        )
        assert result.returncode == 0, result.stderr
    # Orthanc answers C-FIND only for peers it knows.
    orthanc_archive.add_modality("finder", FINDER_AET, LOOPBACK, 1)

    answers = findscu(
        LOOPBACK,
        orthanc_archive.dicom_port,
        calling_ae=FINDER_AET,
        called_ae=orthanc_archive.aet,
        level="IMAGE",
        keys={"StudyInstanceUID": study.study_uid, "SeriesInstanceUID": "", "SOPInstanceUID": ""},
        timeout=30,
    )

    assert sorted(str(ds.SOPInstanceUID) for ds in answers) == sorted(study.sop_instance_uids)
    with pytest.raises(DcmtkError):
        findscu(
            LOOPBACK,
            orthanc_archive.dicom_port,
            calling_ae="STRANGER",
            called_ae=orthanc_archive.aet,
            level="IMAGE",
            keys={"StudyInstanceUID": study.study_uid, "SOPInstanceUID": ""},
            timeout=30,
        )


def test_movescu_moves_a_study_from_orthanc_to_storescp(
    orthanc_archive: Orthanc,
    storescp_peer: Storescp,
    synthetic_study: StudyFactory,
) -> None:
    """A study-level C-MOVE asks Orthanc to send every instance of the study to storescp."""
    study = synthetic_study(4)
    orthanc_archive.upload(study.paths)
    orthanc_archive.add_modality("mover", "MOVESCU", LOOPBACK, 1)
    orthanc_archive.add_modality("destination", storescp_peer.aet, LOOPBACK, storescp_peer.port)

    result = movescu(
        LOOPBACK,
        orthanc_archive.dicom_port,
        calling_ae="MOVESCU",
        called_ae=orthanc_archive.aet,
        move_destination=storescp_peer.aet,
        level="STUDY",
        keys={"StudyInstanceUID": study.study_uid},
        timeout=30,
    )

    assert final_response(result) == "Success", result.stderr
    assert storescp_peer.wait_for(study.sop_instance_uids, timeout=10) == set(study.sop_instance_uids)


def test_orthanc_keeps_its_data_across_stop_and_start(
    orthanc_archive: Orthanc,
    synthetic_study: StudyFactory,
) -> None:
    """Stopping and starting Orthanc keeps its ports and its stored instances."""
    study = synthetic_study(3)
    orthanc_archive.upload(study.paths)
    ports = (orthanc_archive.dicom_port, orthanc_archive.http_port)

    orthanc_archive.stop()
    assert not orthanc_archive.is_running()
    orthanc_archive.start()

    assert (orthanc_archive.dicom_port, orthanc_archive.http_port) == ports
    assert orthanc_archive.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids)
    assert echoscu(LOOPBACK, orthanc_archive.dicom_port, called_ae=orthanc_archive.aet).returncode == 0
    assert orthanc_archive.delete_instance(study.sop_instance_uids[0])
    assert orthanc_archive.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids[1:])
