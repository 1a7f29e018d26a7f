"""Admission, hostile UIDs, an unwritable spool, and an archive that misbehaves."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard.domain import status as st
from guard.sandbox.archive import ReferenceArchive
from tests.acceptance.conftest import GuardFactory
from tests.support.availability import unavailable
from tests.support.datasets import make_instance
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE
from tests.support.scu import send_files
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop


@pytest.fixture
def ref_archive(tmp_path: Path) -> Iterator[ReferenceArchive]:
    """The project's reference archive, in this process, with switchable faults."""
    archive = ReferenceArchive(tmp_path / "ref-archive").start()
    yield archive
    archive.stop()


def test_unknown_calling_ae_and_wrong_called_ae_are_rejected_and_audited(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """A storescu with an unknown calling AE or a wrong called AE gets A-ASSOCIATE-RJ; both are audited."""
    guard = guard_factory(archive_port=ref_archive.port).start()
    study = synthetic_study(1)
    unknown = storescu("127.0.0.1", guard.port, study.paths, calling_ae="INTRUDER", called_ae=GUARD_AE)
    assert unknown.returncode != 0
    assert "Calling AE Title Not Recognized" in unknown.stdout + unknown.stderr
    wrong = storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae="NOTGUARD")
    assert "Called AE Title Not Recognized" in wrong.stdout + wrong.stderr
    rejected = guard.audit_records("association.rejected")
    assert [(r["actor"], r["detail"]["reason"]) for r in rejected] == [
        ("INTRUDER", "calling-ae-not-recognized"),
        (SOURCE_AE, "called-ae-not-recognized"),
    ]
    assert all(r["peer_address"] == "127.0.0.1" for r in rejected)
    assert guard.instance_states() == {}


def test_source_from_another_host_is_rejected(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """A source bound to a host is refused when it calls from another address."""
    guard = guard_factory(archive_port=ref_archive.port, sources=[{"ae_title": SOURCE_AE, "host": "127.0.0.2", "port": 104}]).start()
    result = storescu("127.0.0.1", guard.port, synthetic_study(1).paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert result.returncode != 0
    assert [r["detail"]["reason"] for r in guard.audit_records("association.rejected")] == ["address-not-allowed"]


@pytest.mark.parametrize("bad_uid", ["../../x", "1." + "2" * 63, "1.2.abc.4"])
def test_invalid_sop_instance_uid_is_refused_and_nothing_is_written(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, tmp_path: Path, bad_uid: str
) -> None:
    """An instance whose SOP Instance UID breaks the UID grammar gets a failure status; no file lands anywhere."""
    guard = guard_factory(archive_port=ref_archive.port).start()
    path = make_instance(tmp_path / "bad" / "bad.dcm", study_uid="1.2.3", series_uid="1.2.3.1", sop_instance_uid=bad_uid)
    before = {p for p in tmp_path.rglob("*") if p.is_file() and "guard" in p.parts and p.suffix == ".dcm"}
    result = storescu("127.0.0.1", guard.port, [path], calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert store_responses(result) == ["Error: CannotUnderstand"]
    after = {p for p in tmp_path.rglob("*") if p.is_file() and "guard" in p.parts and p.suffix == ".dcm"}
    assert after == before
    assert not (tmp_path / "x").exists()
    assert not (tmp_path.parent / "x").exists()
    alerts = guard.audit_records("security.alert")
    assert any(a["detail"].get("reason") == "invalid-uid" for a in alerts)
    assert guard.instance_states() == {}


@pytest.fixture
def small_mount(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs to fill up or make read-only (needs root, as in CI)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        unavailable("mount(8) not available")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_or_read_only_spool_answers_failure_then_recovers(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, small_mount: Path, synthetic_study: StudyFactory
) -> None:
    """A spool that cannot be written gives 0xA700, never Success; once writable again the service answers Success."""
    guard = guard_factory(archive_port=ref_archive.port, node={"data_dir": str(small_mount)}).start()
    study = synthetic_study(3, rows=256, columns=256)
    filler = small_mount / "filler"
    filler.write_bytes(b"\0" * (small_mount.stat().st_size or 0))
    free = shutil.disk_usage(small_mount).free
    with filler.open("ab") as fh:
        fh.write(b"\0" * max(free - 4096, 0))
    full = send_files(guard.port, study.paths[:1])
    assert full[0][1] == st.OUT_OF_RESOURCES
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    read_only = send_files(guard.port, study.paths[1:2])
    assert read_only[0][1] == st.OUT_OF_RESOURCES
    subprocess.run(["mount", "-o", "remount,rw", str(small_mount)], check=True)
    again = send_files(guard.port, study.paths)
    assert [s for _, s in again] == [st.SUCCESS] * 3
    refusals = [r for r in guard.audit_records("instance.received") if r["outcome"] == "failure"]
    assert [r["detail"]["reason"] for r in refusals] == ["spool-unavailable", "spool-unavailable"]
    wait_until(lambda: ref_archive.held_uids() >= set(study.sop_instance_uids), 30, message="not forwarded after recovery")


@pytest.mark.parametrize(
    ("fault", "value", "permanent"),
    [("status", 0xA700, False), ("abort", True, False), ("status", 0xA900, True), ("status", 0xC123, True)],
)
def test_failing_archive_is_retried_with_backoff_then_dead_lettered(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, fault: str, value: object, permanent: bool
) -> None:
    """Transient failures are retried (with growing delays) up to max_attempts; permanent ones dead-letter at once; status shows why."""
    setattr(ref_archive.faults, fault, value)
    guard = guard_factory(archive_port=ref_archive.port, forward={"max_attempts": 3}).start()
    study = synthetic_study(2)
    assert [s for _, s in send_files(guard.port, study.paths)] == [st.SUCCESS] * 2
    wait_until(lambda: set(guard.instance_states().values()) == {"dead-lettered"}, 60, message="not dead-lettered")
    failed = guard.audit_records("instance.failed")
    dead = guard.audit_records("instance.dead_lettered")
    assert len(dead) == 2
    if permanent:
        assert failed == []
        assert all(d["detail"]["reason"].startswith("permanent failure") for d in dead)
        assert {d["detail"]["status"] for d in dead} == {f"0x{value:04X}"}
    else:
        assert len(failed) == 4
        assert all("after 3 attempts" in d["detail"]["reason"] for d in dead)
    status = guard.cli("status", study.study_uid, "--json")
    assert status.returncode == 0, status.stderr
    assert '"dead-lettered": 2' in status.stdout
    assert dead[0]["detail"]["reason"] in status.stdout
    human = guard.cli("status", study.study_uid)
    assert "Dead letters" in human.stdout


def test_requeued_dead_letters_are_forwarded_after_the_cause_is_fixed(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """``guard requeue STUDY`` sends dead letters again; with the archive fixed they are forwarded."""
    ref_archive.faults.status = 0xA900
    guard = guard_factory(archive_port=ref_archive.port).start()
    study = synthetic_study(2)
    send_files(guard.port, study.paths)
    wait_until(lambda: set(guard.instance_states().values()) == {"dead-lettered"}, 30, message="not dead-lettered")
    ref_archive.faults.clear()
    result = guard.cli("requeue", study.study_uid)
    assert result.returncode == 0, result.stderr
    assert "2 instance(s) re-queued" in result.stdout
    wait_until(lambda: set(guard.instance_states().values()) == {"forwarded"}, 30, message="requeued instances not forwarded")
    assert ref_archive.held_uids() == set(study.sop_instance_uids)


def test_refused_associations_are_retried_until_the_archive_accepts(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """An archive refusing associations does not use up attempts: nothing is dead-lettered, all arrive later."""
    ref_archive.faults.refuse = True
    guard = guard_factory(archive_port=ref_archive.port, forward={"max_attempts": 2}).start()
    study = synthetic_study(2)
    send_files(guard.port, study.paths)
    wait_until(lambda: len(guard.audit_records("instance.failed")) >= 6, 30, message="not retried")
    assert guard.audit_records("instance.dead_lettered") == []
    ref_archive.faults.clear()
    wait_until(lambda: ref_archive.held_uids() == set(study.sop_instance_uids), 30, message="not forwarded once accepted")


def test_archive_that_drops_silently_is_only_forwarded_not_confirmed(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """An archive that answers Success without keeping data leaves the instances 'forwarded', never 'confirmed'."""
    ref_archive.faults.drop = True
    guard = guard_factory(archive_port=ref_archive.port).start()
    study = synthetic_study(2)
    send_files(guard.port, study.paths)
    wait_until(lambda: set(guard.instance_states().values()) == {"forwarded"}, 30, message="not forwarded")
    assert ref_archive.held_uids() == set()
    assert ref_archive.received_count == 2


@pytest.mark.parametrize("mode", ["find", "commitment", "both"])
def test_archive_keeping_only_part_of_a_study_is_caught(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, mode: str
) -> None:
    """Success answered but only every other instance kept: each dropped one is detected and re-sent; only held ones are confirmed."""
    ref_archive.faults.drop_every = 2
    guard = guard_factory(archive_port=ref_archive.port, archive={"confirm": mode}, confirm={"max_resends": 10, "batch_wait": 0.2})
    ref_archive.add_requester(GUARD_AE, "127.0.0.1", guard.port)
    guard.start()
    study = synthetic_study(8)
    assert [s for _, s in send_files(guard.port, study.paths)] == [st.SUCCESS] * 8

    def all_confirmed() -> bool:
        states = guard.instance_states()
        return len(states) == 8 and set(states.values()) == {"confirmed"}

    wait_until(all_confirmed, 90, message="not every instance confirmed")
    assert ref_archive.held_uids() == set(study.sop_instance_uids)
    dropped = ref_archive.received_count - 8
    assert dropped >= 4
    sent_back = [r for r in guard.audit_records("instance.failed") if r["detail"].get("resend")]
    assert len(sent_back) >= dropped
    confirmed = guard.audit_records("instance.confirmed")
    assert sorted(r["sop_instance_uid"] for r in confirmed) == sorted(study.sop_instance_uids)


def test_dead_lettered_study_cannot_be_deleted(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """``guard delete`` on a study with a dead letter is refused (exit 3) with reason dead-lettered."""
    ref_archive.faults.status = 0xA900
    guard = guard_factory(archive_port=ref_archive.port, delete={"source_check": False})
    study = synthetic_study(1)
    guard.start()
    send_files(guard.port, study.paths)
    wait_until(lambda: set(guard.instance_states().values()) == {"dead-lettered"}, 30, message="not dead-lettered")
    result = guard.cli("delete", study.study_uid)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "dead-lettered" in result.stdout
    (refused,) = guard.audit_records("delete.refused")
    assert "dead-lettered" in refused["detail"]["reasons"]
