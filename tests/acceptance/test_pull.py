"""``guard pull`` from an Orthanc acting as the PACS: studies arrive, are forwarded to the archive Orthanc and confirmed."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from guard.ledger.schema import instances
from tests.support.fixtures import require_tools
from tests.support.guard import GUARD_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.acceptance.conftest import GuardFactory
    from tests.support.datasets import Study
    from tests.support.fixtures import StudyFactory

pytestmark = pytest.mark.interop

PACS_AE = "PACS"


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    """An Orthanc in the role of the PACS the guard pulls from."""
    require_tools("Orthanc")
    with Orthanc(tmp_path / "orthanc-pacs", aet=PACS_AE) as orthanc:
        yield orthanc


def _guard(guard_factory: GuardFactory, pacs: Orthanc, archive: Orthanc) -> GuardProcess:
    """A running guard with the PACS as its only source; both Orthancs know it."""
    guard = guard_factory(archive_port=archive.dicom_port, sources=[{"ae_title": PACS_AE, "host": "127.0.0.1", "port": pacs.dicom_port}])
    pacs.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    return guard.start()


def _in_pacs(pacs: Orthanc, factory: StudyFactory, count: int, study_date: str | None = None) -> Study:
    study = factory(count)
    if study_date is not None:
        for path in study.paths:
            ds = dcmread(path)
            ds.StudyDate = study_date
            ds.save_as(path)
    pacs.upload(study.paths)
    return study


def _all_confirmed(guard: GuardProcess, studies: list[Study]) -> bool:
    wanted = {uid for study in studies for uid in study.sop_instance_uids}
    states = guard.instance_states()
    return wanted <= set(states) and all(states[uid] == "confirmed" for uid in wanted)


def test_pull_by_uid_forwards_confirms_and_a_second_run_skips(
    guard_factory: GuardFactory, pacs: Orthanc, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Two studies by UID arrive, are forwarded and confirmed; an unknown UID fails with its reason (exit 1); a rerun finds them present."""
    guard = _guard(guard_factory, pacs, orthanc_archive)
    studies = [_in_pacs(pacs, synthetic_study, 4), _in_pacs(pacs, synthetic_study, 3)]
    unknown = str(generate_uid())
    first = guard.cli("pull", studies[0].study_uid, studies[1].study_uid, unknown, timeout=120)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "the source does not list this study" in first.stdout
    wait_until(lambda: _all_confirmed(guard, studies), 60, message="pulled studies not confirmed")
    for study in studies:
        assert orthanc_archive.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids)
    second = guard.cli("pull", studies[0].study_uid, studies[1].study_uid, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    runs = guard.audit_records("pull.completed")
    assert [(r["outcome"], r["detail"]["pulled"], r["detail"]["already_present"], r["detail"]["failed"]) for r in runs] == [
        ("failure", 2, 0, 1),
        ("success", 0, 2, 0),
    ]
    assert runs[0]["detail"]["instances"] == 7
    assert runs[0]["detail"]["first_failures"] == {unknown: "the source does not list this study"}
    assert runs[0]["detail"]["source"] == PACS_AE


def test_pull_by_date_range_takes_only_the_studies_in_range(
    guard_factory: GuardFactory, pacs: Orthanc, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """--date-from/--date-to query the PACS by Study Date: the two studies of 2020 are pulled and confirmed, the 2021 one is not."""
    guard = _guard(guard_factory, pacs, orthanc_archive)
    in_range = [_in_pacs(pacs, synthetic_study, 2, "20200101"), _in_pacs(pacs, synthetic_study, 3, "20201231")]
    outside = _in_pacs(pacs, synthetic_study, 2, "20210101")
    result = guard.cli("pull", "--date-from", "2020-01-01", "--date-to", "2020-12-31", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_until(lambda: _all_confirmed(guard, in_range), 60, message="pulled studies not confirmed")
    assert not set(outside.sop_instance_uids) & set(guard.instance_states())
    [run] = guard.audit_records("pull.completed")
    assert (run["detail"]["pulled"], run["detail"]["instances"]) == (2, 5)
    assert run["detail"]["selection"] == {"date_from": "20200101", "date_to": "20201231", "modality": None}


def _pull_process(guard: GuardProcess, uids: list[str], log: Path) -> subprocess.Popen[Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "guard", "pull", "--concurrency", "1", *uids, "--config", str(guard.config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _studies_held(guard: GuardProcess, studies: list[Study]) -> int:
    """How many of ``studies`` the guard holds completely."""
    states = guard.instance_states()
    return sum(1 for study in studies if set(study.sop_instance_uids) <= set(states))


def test_pull_killed_half_way_then_run_again_finishes_without_duplicates(
    guard_factory: GuardFactory, pacs: Orthanc, orthanc_archive: Orthanc, synthetic_study: StudyFactory, tmp_path: Path
) -> None:
    """SIGKILL of guard pull after some studies have arrived; the rerun completes the rest, and every instance is recorded once."""
    guard = _guard(guard_factory, pacs, orthanc_archive)
    studies = [_in_pacs(pacs, synthetic_study, 25) for _ in range(6)]
    uids = [s.study_uid for s in studies]
    process = _pull_process(guard, uids, tmp_path / "pull-1.log")
    try:
        wait_until(lambda: _studies_held(guard, studies) >= 2 or process.poll() is not None, 120, interval=0.02)
        assert process.poll() is None, "the pull finished before it could be killed; make the studies larger"
    finally:
        process.kill()
        process.wait(10)
    held_at_kill = _studies_held(guard, studies)
    assert 2 <= held_at_kill < 6
    rerun = guard.cli("pull", "--concurrency", "1", *uids, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    wait_until(lambda: _all_confirmed(guard, studies), 90, message="not every pulled instance was confirmed")
    with guard.ledger_engine() as engine, engine.connect() as conn:
        rows = conn.execute(select(instances.c.sop_instance_uid, func.count().label("n")).group_by(instances.c.sop_instance_uid)).all()
    assert len(rows) == 150
    assert {r.n for r in rows} == {1}, "an instance was recorded twice"
    received = [r["sop_instance_uid"] for r in guard.audit_records("instance.received") if r["outcome"] == "success"]
    assert sorted(received) == sorted(uid for s in studies for uid in s.sop_instance_uids)
    assert orthanc_archive.count_instances() == 150
    [run] = guard.audit_records("pull.completed")  # the killed run never finished
    assert run["detail"]["failed"] == 0
    assert run["detail"]["pulled"] + run["detail"]["already_present"] == 6


def test_pull_with_the_guard_not_serving_fails_with_a_reason(
    guard_factory: GuardFactory, pacs: Orthanc, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """With guard serve stopped, the source cannot deliver: the study fails (exit 1) with a reason saying what to check."""
    guard = _guard(guard_factory, pacs, orthanc_archive)
    study = _in_pacs(pacs, synthetic_study, 2)
    assert guard.terminate() == 0
    result = guard.cli("pull", study.study_uid, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is guard serve running" in result.stdout
    [run] = guard.audit_records("pull.completed")
    assert (run["outcome"], run["detail"]["failed"], run["detail"]["pulled"]) == ("failure", 1, 0)
    assert guard.instance_states() == {}
