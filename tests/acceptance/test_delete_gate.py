"""The delete gate end to end: an Orthanc as the PACS (source, REST delete backend), an Orthanc as the archive."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import GuardFactory
from tests.support.datasets import REJECTION_TITLES, make_instance, make_rejection_note
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.slow]

PACS_AE = "PACS"


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    """An Orthanc standing in for the PACS."""
    with Orthanc(tmp_path / "orthanc-pacs", aet=PACS_AE) as orthanc:
        yield orthanc


def _start_guard(guard_factory: GuardFactory, archive: Orthanc, pacs: Orthanc, *, batch_wait: float, **extra: object) -> GuardProcess:
    """A guard between the two Orthancs, known to both, deleting through the PACS Orthanc's REST API."""
    guard = guard_factory(
        archive_port=archive.dicom_port,
        sources=[{"ae_title": PACS_AE, "host": "127.0.0.1", "port": pacs.dicom_port}],
        delete={"backend": "orthanc", "url": pacs.url},
        confirm={"batch_wait": batch_wait},
        **extra,
    )
    for orthanc in (archive, pacs):
        orthanc.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    return guard.start()


def _pacs_sends(pacs: Orthanc, paths: list[Path]) -> None:
    """The PACS stores the files, then sends the study to the guard by C-STORE (its own DICOM client)."""
    ids = pacs.upload(paths)
    answer = pacs.rest().post("/modalities/guard/store", json={"Resources": ids, "Synchronous": True}, timeout=60)
    answer.raise_for_status()


def _delete(guard: GuardProcess, study_uid: str) -> tuple[int, str]:
    result = guard.cli("delete", study_uid, "--reason", "archive move")
    return result.returncode, result.stdout + result.stderr


def _last_decision(guard: GuardProcess, study_uid: str) -> dict[str, object]:
    records = [r for r in guard.audit_records() if r["event"] in {"delete.permitted", "delete.refused"} and r["study_uid"] == study_uid]
    return records[-1]


def test_delete_gate_with_orthanc_pacs_and_archive(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, pacs: Orthanc, synthetic_study: StudyFactory, tmp_path: Path
) -> None:
    """Refused with the right reason in each unsafe situation (the PACS keeps the study); permitted and carried out once safe."""
    # Long enough for `guard delete` to start and refuse before the commitment request, even on a loaded machine.
    guard = _start_guard(guard_factory, orthanc_archive, pacs, batch_wait=20)
    study = synthetic_study(4)

    code, text = _delete(guard, "1.2.3.4.5.6.7")
    assert code == 3
    assert "unknown-study" in text

    _pacs_sends(pacs, study.paths)
    # In the archive but not yet confirmed (the commitment request waits for batch_wait): "unconfirmed" alone.
    wait_until(lambda: set(guard.instance_states().values()) == {"forwarded"}, 30, message="not forwarded")
    code, text = _delete(guard, study.study_uid)
    assert (code, "unconfirmed" in text) == (3, True)
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="not confirmed")

    extra = make_instance(
        tmp_path / "extra.dcm", study_uid=study.study_uid, series_uid=study.series_uids[0], sop_instance_uid="1.2.3.777.1"
    )
    (extra_id,) = pacs.upload([extra])
    code, text = _delete(guard, study.study_uid)
    assert (code, "unknown-to-guard" in text) == (3, True)
    pacs.rest().delete(f"/instances/{extra_id}").raise_for_status()

    orthanc_archive.stop()
    code, text = _delete(guard, study.study_uid)
    assert (code, "archive-unreachable" in text) == (3, True)
    orthanc_archive.start()

    pacs.stop()
    code, text = _delete(guard, study.study_uid)
    assert (code, "source-unreachable" in text) == (3, True)
    pacs.start()
    assert pacs.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids)

    code, text = _delete(guard, study.study_uid)
    assert code == 0, text
    assert pacs.instance_uids_of_study(study.study_uid) == set()
    assert orthanc_archive.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids)
    permitted = _last_decision(guard, study.study_uid)
    assert permitted["event"] == "delete.permitted"
    assert permitted["actor"] == f"cli:{__import__('getpass').getuser()}"

    refusals = [r["detail"]["reasons"] for r in guard.audit_records("delete.refused")]
    assert refusals == [
        ["unknown-study"],
        ["unconfirmed"],
        ["unknown-to-guard", "missing-in-archive"],  # the extra instance is in neither the guard nor the archive
        ["archive-unreachable"],
        ["source-unreachable"],
    ]
    requests = guard.audit_records("delete.requested")
    assert len(requests) == 6
    assert all(r["detail"] == {"channel": "cli", "reason": "archive move"} for r in requests)


def test_instance_lost_by_the_archive_refuses_the_delete(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, pacs: Orthanc, synthetic_study: StudyFactory
) -> None:
    """An instance deleted from the archive after confirmation makes the live check refuse with missing-in-archive."""
    guard = _start_guard(guard_factory, orthanc_archive, pacs, batch_wait=0.2)
    study = synthetic_study(3)
    _pacs_sends(pacs, study.paths)
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="not confirmed")
    assert orthanc_archive.delete_instance(study.sop_instance_uids[2])
    code, text = _delete(guard, study.study_uid)
    assert (code, "missing-in-archive" in text) == (3, True)
    assert pacs.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids)
    decision = _last_decision(guard, study.study_uid)
    assert decision["detail"]["evidence"]["missing_in_archive"] == [study.sop_instance_uids[2]]
    assert json.dumps(decision["detail"])


def test_iocm_rejection_notes_are_gated(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory, tmp_path: Path
) -> None:
    """A rejection KOS (each of the four titles) for an unconfirmed study gets 0x0124; for a confirmed study it is stored and forwarded."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port, delete={"source_check": False}, confirm={"batch_wait": 0.2})
    guard.start()  # Orthanc does not know the guard yet: nothing can be confirmed
    unconfirmed = synthetic_study(2)
    assert (
        store_responses(storescu("127.0.0.1", guard.port, unconfirmed.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)) == ["Success"] * 2
    )
    for title in REJECTION_TITLES:
        note = make_rejection_note(tmp_path / f"note-{title}.dcm", unconfirmed, title=title)
        result = storescu("127.0.0.1", guard.port, [note], calling_ae=SOURCE_AE, called_ae=GUARD_AE)
        assert store_responses(result) == ["Unknown Status: 0x124"], result.stdout + result.stderr  # DCMTK's words for 0x0124
    refused = guard.audit_records("delete.refused")
    assert [(r["detail"]["channel"], r["actor"], r["study_uid"]) for r in refused] == [("iocm", SOURCE_AE, unconfirmed.study_uid)] * 4
    assert all("unconfirmed" in r["detail"]["reasons"] for r in refused)

    orthanc_archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="not confirmed")
    note = make_rejection_note(tmp_path / "note-ok.dcm", unconfirmed, title="113001")
    result = storescu("127.0.0.1", guard.port, [note], calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert store_responses(result) == ["Success"], result.stdout
    (permitted,) = guard.audit_records("delete.permitted")
    assert (permitted["detail"]["channel"], permitted["study_uid"]) == ("iocm", unconfirmed.study_uid)
    note_uid = str(__import__("pydicom").dcmread(note).SOPInstanceUID)
    wait_until(lambda: note_uid in orthanc_archive.instance_uids_of_study(unconfirmed.study_uid), 30, message="note not forwarded")


def test_http_delete_carries_out_on_the_pacs_and_the_archive_keeps_everything(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, pacs: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Through the running guard's admin API: 401 without a token, then 200 permitted; the PACS copy is gone, the archive's is whole."""
    http_port = free_port()
    # One commitment request for the study (the latency count below): the three instances must be
    # forwarded within batch_wait of each other, which a loaded machine can stretch past 0.2 s.
    guard = _start_guard(
        guard_factory, orthanc_archive, pacs, batch_wait=5, http={"bind": "127.0.0.1", "port": http_port, "token": "s3cret-token"}
    )
    base = f"http://127.0.0.1:{http_port}"
    assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
    assert guard.cli("health", "--ready").returncode == 0
    study = synthetic_study(3)
    _pacs_sends(pacs, study.paths)
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="not confirmed")
    view = httpx.get(f"{base}/studies/{study.study_uid}", timeout=30).json()
    assert view["deletable"]["decision"] == "permitted"
    assert httpx.delete(f"{base}/studies/{study.study_uid}", timeout=30).status_code == 401
    assert httpx.delete(f"{base}/studies/{study.study_uid}", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    assert pacs.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids)
    answer = httpx.delete(f"{base}/studies/{study.study_uid}", headers={"Authorization": "Bearer s3cret-token"}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["decision"] == "permitted"
    assert pacs.instance_uids_of_study(study.study_uid) == set()
    assert orthanc_archive.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids)
    alerts = [a["detail"]["alert"] for a in guard.audit_records("security.alert")]
    assert alerts.count("bad-token") == 2
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert 'guard_instances{state="confirmed"} 3.0' in metrics
    assert "guard_commitment_latency_seconds_count 1.0" in metrics
    assert 'guard_delete_decisions_total{channel="http",outcome="permitted"} 1.0' in metrics


def test_concurrent_deletes_act_once_and_a_later_instance_is_protected(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, pacs: Orthanc, synthetic_study: StudyFactory, tmp_path: Path
) -> None:
    """Two DELETEs at once: one acts, the other gets the same answer; an instance arriving afterwards makes the study protected again."""
    http_port = free_port()
    guard = _start_guard(
        guard_factory, orthanc_archive, pacs, batch_wait=0.2, http={"bind": "127.0.0.1", "port": http_port, "token": "tok"}
    )
    study = synthetic_study(2)
    _pacs_sends(pacs, study.paths)
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="not confirmed")
    url = f"http://127.0.0.1:{http_port}/studies/{study.study_uid}"
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: httpx.delete(url, headers={"Authorization": "Bearer tok"}, timeout=60), range(2)))
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert {a.json()["decision"] for a in answers} == {"permitted"}
    permitted = guard.audit_records("delete.permitted")
    assert sorted("already_deleted" in p["detail"] for p in permitted) == [False, True]
    assert pacs.instance_uids_of_study(study.study_uid) == set()

    orthanc_archive.stop()  # the late instance must stay unconfirmed while we ask
    late = make_instance(tmp_path / "late.dcm", study_uid=study.study_uid, series_uid=study.series_uids[0], sop_instance_uid="1.2.3.888.1")
    assert store_responses(storescu("127.0.0.1", guard.port, [late], calling_ae=PACS_AE, called_ae=GUARD_AE)) == ["Success"]
    again = httpx.delete(url, headers={"Authorization": "Bearer tok"}, timeout=60)
    assert again.status_code == 409, again.text
    assert "unconfirmed" in again.json()["reasons"]
