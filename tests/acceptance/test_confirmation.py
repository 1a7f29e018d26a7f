"""Confirmation against a real Orthanc archive: Storage Commitment, C-FIND, re-verification, retention."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.conftest import GuardFactory
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop


def _guard_known_to(orthanc: Orthanc, guard: GuardProcess, port: int | None = None) -> None:
    """Orthanc only accepts N-ACTION from, and reports to, modalities it knows."""
    orthanc.add_modality("guard", GUARD_AE, "127.0.0.1", port or guard.port)


def _send(guard: GuardProcess, paths: list[Path]) -> None:
    result = storescu("127.0.0.1", guard.port, paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert store_responses(result) == ["Success"] * len(paths), result.stdout + result.stderr


def _all_confirmed(guard: GuardProcess, count: int) -> bool:
    states = guard.instance_states()
    return len(states) == count and set(states.values()) == {"confirmed"}


def _all_forwarded(guard: GuardProcess, count: int) -> bool:
    states = guard.instance_states()
    return len(states) == count and set(states.values()) <= {"forwarded", "confirmed"}


def test_orthanc_storage_commitment_confirms_every_instance(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """A study sent by storescu ends with every instance confirmed by Orthanc's own N-EVENT-REPORT on a new association.

    Soon after its last instance was forwarded: the forwarded batches wake the confirmation loop
    for when the study's request is due (``confirm.batch_wait`` later), not for its next look,
    here half a minute away.
    """
    guard = guard_factory(archive_port=orthanc_archive.dicom_port, confirm={"poll_interval": 30})
    _guard_known_to(orthanc_archive, guard)
    guard.start()
    study = synthetic_study(12)
    _send(guard, study.paths)
    wait_until(lambda: _all_forwarded(guard, 12), 60, message="not all forwarded")
    wait_until(lambda: _all_confirmed(guard, 12), 15, message="not all confirmed within 15 s of the last forward")
    confirmed = guard.audit_records("instance.confirmed")
    assert len(confirmed) == 12
    assert all(r["detail"]["proof"] == ["commitment"] for r in confirmed)
    reports = [r for r in guard.audit_records("commitment.reported") if r["outcome"] == "success"]
    assert reports
    assert all(r["actor"] == "ARCHIVE" and r["peer_address"] == "127.0.0.1" for r in reports)
    assert orthanc_archive.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids)


def test_instance_lost_before_commitment_is_reported_failed_resent_and_confirmed(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """An instance deleted from Orthanc after forwarding but before commitment is reported failed, re-sent, and confirmed in the end."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port).start()  # Orthanc does not know the guard yet: N-ACTION aborted
    study = synthetic_study(4)
    _send(guard, study.paths)
    wait_until(lambda: orthanc_archive.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids), 30, message="not forwarded")
    wait_until(lambda: any(r["outcome"] == "failure" for r in guard.audit_records("commitment.reported")), 30, message="no failed request")
    assert "confirmed" not in guard.instance_states().values()
    victim = study.sop_instance_uids[1]
    assert orthanc_archive.delete_instance(victim)
    _guard_known_to(orthanc_archive, guard)
    wait_until(lambda: _all_confirmed(guard, 4), 90, message="not all confirmed after the re-send")
    failed = [r for r in guard.audit_records("instance.failed") if r["sop_instance_uid"] == victim]
    assert any("0x0112" in r["detail"]["error"] for r in failed)
    assert victim in orthanc_archive.instance_uids_of_study(study.study_uid)


def test_report_listener_unreachable_then_the_guard_asks_again(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Orthanc cannot deliver its report (wrong address for the guard): the guard times out, asks again, and confirms."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port, confirm={"commitment_timeout": 3})
    _guard_known_to(orthanc_archive, guard, port=1)  # nobody listens on port 1: Orthanc's report job fails
    guard.start()
    study = synthetic_study(3)
    _send(guard, study.paths)
    wait_until(
        lambda: any(r["detail"].get("error") == "timed out" for r in guard.audit_records("commitment.reported")), 30, message="no timeout"
    )
    assert "confirmed" not in guard.instance_states().values()
    _guard_known_to(orthanc_archive, guard)
    wait_until(lambda: _all_confirmed(guard, 3), 60, message="not confirmed after asking again")


def test_find_mode_confirms_by_c_find(guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory) -> None:
    """With confirm = find, a Study Root IMAGE-level C-FIND of Orthanc is the proof."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port, archive={"confirm": "find"})
    _guard_known_to(orthanc_archive, guard)
    guard.start()
    study = synthetic_study(5)
    _send(guard, study.paths)
    wait_until(lambda: _all_confirmed(guard, 5), 60, message="not confirmed by C-FIND")
    assert all(r["detail"]["proof"] == ["find"] for r in guard.audit_records("instance.confirmed"))
    assert guard.audit_records("commitment.requested") == []


def test_both_mode_needs_both_proofs(guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory) -> None:
    """With confirm = both, an instance is confirmed only with commitment and C-FIND proof."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port, archive={"confirm": "both"})
    _guard_known_to(orthanc_archive, guard)
    guard.start()
    study = synthetic_study(3)
    _send(guard, study.paths)
    wait_until(lambda: _all_confirmed(guard, 3), 60, message="not confirmed with both proofs")
    assert all(sorted(r["detail"]["proof"]) == ["commitment", "find"] for r in guard.audit_records("instance.confirmed"))


def test_reverification_finds_a_lost_instance_and_resends_it_from_the_spool(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """An instance removed from Orthanc after confirmation is found by re-verification, re-sent from the spool, and confirmed again."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port, confirm={"reverify_interval_hours": 0.0008})
    _guard_known_to(orthanc_archive, guard)
    guard.start()
    study = synthetic_study(3)
    _send(guard, study.paths)
    wait_until(lambda: _all_confirmed(guard, 3), 60, message="not confirmed")
    victim = study.sop_instance_uids[0]
    assert orthanc_archive.delete_instance(victim)
    wait_until(lambda: guard.audit_records("instance.missing_in_archive"), 30, message="loss not detected")
    wait_until(lambda: victim in orthanc_archive.instance_uids_of_study(study.study_uid), 30, message="not re-sent")
    wait_until(lambda: _all_confirmed(guard, 3), 60, message="not confirmed again")
    (missing,) = guard.audit_records("instance.missing_in_archive")
    assert missing["sop_instance_uid"] == victim
    assert missing["detail"]["spool_copy"] is True


def test_spool_copy_kept_until_confirmed_then_removed_after_grace(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Unconfirmed instances keep their spool copy; confirmed ones lose it once the grace period has passed."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port, confirm={"spool_grace_hours": 0.0005})
    guard.start()  # Orthanc does not know the guard: nothing can be confirmed yet
    study = synthetic_study(2)
    _send(guard, study.paths)
    spool = guard.data_dir / "spool" / study.study_uid
    wait_until(lambda: set(guard.instance_states().values()) == {"forwarded"}, 30, message="not forwarded")
    assert len(list(spool.glob("*.dcm"))) == 2
    _guard_known_to(orthanc_archive, guard)
    wait_until(lambda: _all_confirmed(guard, 2), 60, message="not confirmed")
    # The guard removes a file, then commits its audit record: wait for both, or a busy machine
    # can show the last file gone before its record is written.
    wait_until(
        lambda: not list(spool.glob("*.dcm")) and len(guard.audit_records("instance.spool_removed")) >= 2,
        30,
        message="spool copies not removed after the grace period",
    )
    assert len(guard.audit_records("instance.spool_removed")) == 2


def test_reconcile_requeues_what_the_archive_lacks_and_alerts_on_what_is_lost(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """``guard reconcile`` re-sends instances missing from Orthanc from the spool; with no spool copy it alerts and exits 1."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port)
    _guard_known_to(orthanc_archive, guard)
    guard.start()
    study = synthetic_study(3)
    _send(guard, study.paths)
    wait_until(lambda: _all_confirmed(guard, 3), 60, message="not confirmed")
    resendable, lost = study.sop_instance_uids[0], study.sop_instance_uids[1]
    assert orthanc_archive.delete_instance(resendable)
    assert orthanc_archive.delete_instance(lost)
    (spool_copy,) = (guard.data_dir / "spool" / study.study_uid).glob(f"{lost}-*.dcm")
    spool_copy.unlink()
    result = guard.cli("reconcile", study.study_uid)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Reconcile summary" in result.stdout
    wait_until(lambda: resendable in orthanc_archive.instance_uids_of_study(study.study_uid), 30, message="not re-sent")
    wait_until(lambda: guard.instance_states()[resendable] == "confirmed", 30, message="re-sent instance not confirmed")
    assert guard.instance_states()[lost] == "missing-in-archive"
    alerts = [a for a in guard.audit_records("security.alert") if a["sop_instance_uid"] == lost]
    assert [a["detail"]["alert"] for a in alerts] == ["lost-in-archive"]
    (run,) = guard.audit_records("reconcile.completed")
    assert (run["detail"]["studies"], run["detail"]["requeued"], run["detail"]["lost"]) == (1, 1, 1)
    again = guard.cli("reconcile", "--all")
    assert "1" in again.stdout
