"""Proof of bytes against a real Orthanc archive: a copy damaged in Orthanc's storage (its index still lists it) is found.

Each test damages one instance by overwriting the file in Orthanc's storage folder with the
same instance carrying other pixel values: Storage Commitment and C-FIND still vouch for it,
only a byte check can tell.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import select

from guard.ledger.schema import byte_checks
from tests.acceptance.conftest import GuardFactory
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import ARCHIVE_AET, StudyFactory, require_tools
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.slow]

TOKEN = "bytes-admin-token"


@pytest.fixture
def orthanc_archive(tmp_path: Path) -> Iterator[Orthanc]:
    """The archive Orthanc without its storage cache (Orthanc 1.10 keeps recently read files in memory): every read is from disk."""
    require_tools("Orthanc")
    with Orthanc(tmp_path / "orthanc-archive", aet=ARCHIVE_AET, extra_config={"MaximumStorageCacheSize": 0}) as orthanc:
        yield orthanc


def _start(guard_factory: GuardFactory, archive: Orthanc, **overrides: Any) -> GuardProcess:
    """A guard confirming with Orthanc (commitment), known to it, deciding deletes without asking the source."""
    verify = {"at_confirmation": "all", **overrides.pop("verify", {})}
    guard = guard_factory(
        archive_port=archive.dicom_port,
        delete={"source_check": False},
        verify=verify,
        http={"port": free_port(), "token": TOKEN},
        **overrides,
    )
    archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    return guard.start()


def _send(guard: GuardProcess, paths: list[Path]) -> None:
    result = storescu("127.0.0.1", guard.port, paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert store_responses(result) == ["Success"] * len(paths), result.stdout + result.stderr


def _checks(guard: GuardProcess) -> list[dict[str, Any]]:
    """Every row of the ledger's byte_checks table, oldest first."""
    with guard.ledger_engine() as engine, engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(byte_checks).order_by(byte_checks.c.id)).mappings()]


def _results(guard: GuardProcess, sop_uid: str) -> list[str]:
    return [c["result"] for c in _checks(guard) if c["sop_instance_uid"] == sop_uid]


def _all_matched(guard: GuardProcess, uids: list[str]) -> bool:
    return all(_results(guard, uid)[-1:] == ["match"] for uid in uids)


def _damage(archive: Orthanc, original: Path) -> Path:
    """Overwrite Orthanc's stored file of ``original`` with the same instance whose pixel values differ; the index is untouched."""
    ds = dcmread(original)
    [match] = [m for m in archive.lookup(str(ds.SOPInstanceUID)) if m["Type"] == "Instance"]
    info = archive.rest().get(f"/instances/{match['ID']}/attachments/dicom/info").json()
    uuid = str(info["Uuid"])
    stored = archive.storage_dir / uuid[:2] / uuid[2:4] / uuid
    assert stored.is_file(), stored
    pixels = bytearray(ds.PixelData)
    pixels[:16] = bytes(255 - b for b in pixels[:16])
    ds.PixelData = bytes(pixels)
    ds.save_as(stored, enforce_file_format=True)
    return stored


def _delete(guard: GuardProcess, study_uid: str) -> tuple[int, str]:
    result = guard.cli("delete", study_uid, "--reason", "byte verification test")
    return result.returncode, result.stdout + result.stderr


def _study_view(guard: GuardProcess, study_uid: str) -> dict[str, Any]:
    port = guard.config["http"]["port"]
    response = httpx.get(f"http://127.0.0.1:{port}/studies/{study_uid}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    response.raise_for_status()
    view: dict[str, Any] = response.json()
    return view


def test_rolling_reverification_finds_a_damaged_copy_resends_it_and_refuses_deletes_until_it_matches(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """A copy damaged in Orthanc after confirmation: the rolling re-check finds it, it is re-sent, deletes say bytes-differ meanwhile."""
    # batch_wait holds the re-sent instance's commitment request long enough for `guard delete` to run in between.
    guard = _start(guard_factory, orthanc_archive, confirm={"batch_wait": 15}, verify={"reverify_days": 0.0002, "delete_sample": 1})
    study = synthetic_study(3)
    _send(guard, study.paths)
    wait_until(lambda: _all_matched(guard, study.sop_instance_uids), 120, message="not byte-checked at confirmation")
    assert {c["found_by"] for c in _checks(guard)} >= {"confirmation"}
    assert {c["method"] for c in _checks(guard)} == {"c-get"}
    victim = study.sop_instance_uids[1]
    _damage(orthanc_archive, study.paths[1])

    def differ_found() -> bool:
        return any(r["sop_instance_uid"] == victim for r in guard.audit_records("instance.bytes_differ"))

    wait_until(differ_found, 90, message="the rolling re-verification did not find the damaged copy")
    [record] = [r for r in guard.audit_records("instance.bytes_differ") if r["sop_instance_uid"] == victim]
    assert record["detail"]["found_by"] == "reverify"
    assert record["detail"]["result"] == "differ"
    [row] = [c for c in _checks(guard) if c["sop_instance_uid"] == victim and c["result"] == "differ"]
    assert (record["detail"]["expected_sha256"], record["detail"]["archive_sha256"]) == (row["expected_sha256"], row["archive_sha256"])
    assert row["expected_sha256"] != row["archive_sha256"]
    resent = [r for r in guard.audit_records("instance.failed") if r["sop_instance_uid"] == victim]
    assert resent[-1]["detail"]["resend"] == 1

    code, text = _delete(guard, study.study_uid)
    assert (code, "bytes-differ" in text) == (3, True), text

    wait_until(lambda: _results(guard, victim)[-1:] == ["match"], 120, message="the re-sent copy was not confirmed and matched")
    assert guard.instance_states()[victim] == "confirmed"
    code, text = _delete(guard, study.study_uid)
    assert code == 0, text


def test_delete_time_sample_finds_a_damaged_instance_in_a_study_of_50(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """50 instances in 5 series, one damaged after confirmation: the delete-time sample (1 per series, random) finds it and refuses."""
    guard = _start(guard_factory, orthanc_archive, verify={"at_confirmation": "none", "reverify_days": 0})
    study = synthetic_study(50, series_per_study=5)
    _send(guard, study.paths)
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"} and len(guard.instance_states()) == 50, 180)
    victim = study.sop_instance_uids[17]
    _damage(orthanc_archive, study.paths[17])
    # Each evaluation samples one instance per series at random: the damaged one is drawn with
    # probability 1/10 each time (200 tries miss it with probability below 1e-9).
    verdicts: list[dict[str, Any]] = []
    for _ in range(200):
        verdicts.append(_study_view(guard, study.study_uid)["deletable"])
        if "bytes-differ" in verdicts[-1]["reasons"]:
            break
    assert "bytes-differ" in verdicts[-1]["reasons"], verdicts[-1]
    assert {v["decision"] for v in verdicts[:-1]} <= {"permitted"}, verdicts
    differ = [r for r in guard.audit_records("instance.bytes_differ") if r["sop_instance_uid"] == victim]
    assert [r["detail"]["found_by"] for r in differ] == ["delete"]
    checked = [r for r in guard.audit_records("bytes.checked") if r["detail"]["found_by"] == "delete"]
    assert {r["detail"]["checked"] for r in checked} == {5}
    response = httpx.delete(
        f"http://127.0.0.1:{guard.config['http']['port']}/studies/{study.study_uid}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    )
    assert response.status_code == httpx.codes.CONFLICT
    assert "bytes-differ" in json.dumps(response.json())


@pytest.mark.parametrize("listener_process", [False, True], ids=["one-process", "listener-process"])
def test_c_move_to_the_guard_verifies_and_finds_a_damaged_copy(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory, *, listener_process: bool
) -> None:
    """With verify.retrieve = c-move, Orthanc moves the instances to the guard's listener: confirmed copies match, a damaged one differs.

    With the listener in its own process, it hands the moved instances to the main process's
    verifier (``guard.app.listener_moves``). ``guard delete`` from a shell cannot receive a C-MOVE:
    it refuses with archive-unreachable and says why.
    """
    guard = _start(
        guard_factory,
        orthanc_archive,
        verify={"retrieve": "c-move", "reverify_days": 0, "delete_sample": 4},
        node={"listener_process": listener_process},
    )
    study = synthetic_study(4)
    _send(guard, study.paths)
    wait_until(lambda: _all_matched(guard, study.sop_instance_uids), 120, message="not byte-checked by C-MOVE at confirmation")
    assert {c["method"] for c in _checks(guard)} == {"c-move"}
    # `guard delete` in a shell has no listener for the moved instances: refused, saying why; the running guard permits.
    code, text = _delete(guard, study.study_uid)
    assert (code, "archive-unreachable" in text, "no DICOM listener" in text) == (3, True, True), text
    assert _study_view(guard, study.study_uid)["deletable"]["decision"] == "permitted"
    _damage(orthanc_archive, study.paths[2])
    verdict = _study_view(guard, study.study_uid)["deletable"]
    assert "bytes-differ" in verdict["reasons"], verdict
    assert _results(guard, study.sop_instance_uids[2])[-1] == "differ"
    assert [r["detail"]["method"] for r in guard.audit_records("bytes.checked")][-1] == "c-move"
    moved = [r for r in guard.audit_records("instance.received") if r["actor"] == "ARCHIVE"]
    assert moved == []  # the moved copies were hashed and discarded, never ingested
    assert not list((guard.data_dir / "spool" / ".incoming").glob("relay-*")), "a moved copy was left behind"
