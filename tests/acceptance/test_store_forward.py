"""Store and forward with real peers: DCMTK storescu as the PACS, Orthanc as the archive."""

from __future__ import annotations

import pytest

from tests.acceptance.conftest import GuardFactory
from tests.support.datasets import make_instance
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE
from tests.support.orthanc import Orthanc
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop


def test_storescu_study_reaches_orthanc_through_the_guard(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """50 instances sent by storescu all end up in Orthanc, and the ledger says forwarded for each."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port).start()
    study = synthetic_study(50)
    result = storescu("127.0.0.1", guard.port, study.paths[0].parent, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert result.returncode == 0, result.stderr
    assert store_responses(result) == ["Success"] * 50
    expected = set(study.sop_instance_uids)
    wait_until(lambda: orthanc_archive.instance_uids_of_study(study.study_uid) == expected, 60, message="not all instances reached Orthanc")
    wait_until(lambda: set(guard.instance_states().values()) == {"forwarded"}, 20, message="ledger not all forwarded")
    assert set(guard.instance_states()) == expected
    received = guard.audit_records("instance.received")
    assert len(received) == 50
    assert {r["actor"] for r in received} == {SOURCE_AE}
    assert all(r["detail"]["sha256"] and r["detail"]["size"] > 0 for r in received)
    assert len(guard.audit_records("instance.forwarded")) == 50


def test_archive_down_instances_are_acked_and_forwarded_when_it_returns(
    guard_factory: GuardFactory, tmp_path_factory: pytest.TempPathFactory, synthetic_study: StudyFactory
) -> None:
    """With the archive down every instance still gets Success (durable); all reach it once it is back."""
    archive = Orthanc(tmp_path_factory.mktemp("late-archive"), aet="ARCHIVE")
    guard = guard_factory(archive_port=archive.dicom_port).start()
    study = synthetic_study(20)
    result = storescu("127.0.0.1", guard.port, study.paths[0].parent, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert store_responses(result) == ["Success"] * 20
    wait_until(lambda: len(guard.audit_records("instance.failed")) >= 20, 30, message="no forwarding attempt failed")
    assert "forwarded" not in set(guard.instance_states().values())
    with archive:
        wait_until(
            lambda: archive.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids),
            60,
            message="instances not forwarded after the archive came back",
        )
    # The ledger records a send's outcome after it (in batches, ADR 0002): the archive can hold the
    # last instances a moment before their rows say so.
    wait_until(
        lambda: set(guard.instance_states().values()) == {"forwarded"},
        30,
        message="instances in the archive not recorded forwarded",
    )
    assert guard.audit_records("instance.dead_lettered") == []


def test_identical_resend_is_idempotent_and_a_changed_instance_is_a_new_version(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Sending a study twice records nothing new; a changed instance with the same UID is version 2, audited and forwarded."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port).start()
    study = synthetic_study(3)
    for _ in range(2):
        result = storescu("127.0.0.1", guard.port, study.paths[0].parent, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
        assert store_responses(result) == ["Success"] * 3
    assert len(guard.audit_records("instance.received")) == 3
    changed = make_instance(
        study.paths[0].parent / "changed.dcm",
        study_uid=study.study_uid,
        series_uid=study.series_uids[0],
        sop_instance_uid=study.sop_instance_uids[0],
        patient_id="PAT001",
    )
    result = storescu("127.0.0.1", guard.port, changed, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert store_responses(result) == ["Success"]
    changed_uid = study.sop_instance_uids[0]
    received = [r for r in guard.audit_records("instance.received") if r["sop_instance_uid"] == changed_uid]
    assert [(r["detail"]["receipt"], r["detail"]["version"]) for r in received] == [("new", 1), ("new-version", 2)]

    def new_version_forwarded() -> bool:
        # Version 1 may have gone to the archive before version 2 came, or been superseded unsent;
        # either way version 2 is forwarded after its receipt, and every instance's newest version is.
        after = [
            r for r in guard.audit_records("instance.forwarded") if r["sop_instance_uid"] == changed_uid and r["seq"] > received[1]["seq"]
        ]
        return bool(after) and set(guard.instance_states().values()) <= {"forwarded", "confirmed"}

    wait_until(new_version_forwarded, 30, message=f"the new version was not forwarded: {guard.instance_states()}")


def test_sigterm_stops_cleanly(guard_factory: GuardFactory, orthanc_archive: Orthanc) -> None:
    """SIGTERM ends ``guard serve`` with exit code 0 and a service.stopped record."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port).start()
    assert guard.terminate() == 0
    assert [r["event"] for r in guard.audit_records()][-1] == "service.stopped"
