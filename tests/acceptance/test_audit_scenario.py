"""A study's whole life in the audit log: exactly the expected events, in order, by CLI (every format) and HTTP."""

from __future__ import annotations

import csv
import io
import json

import httpx
import pydicom

from tests.acceptance.conftest import GuardFactory
from tests.support.dcmtk import findscu, store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port
from tests.support.waiting import wait_until

#: The history of a one-instance study: received, forwarded, a delete refused while unconfirmed,
#: the Storage Commitment request, the instance confirmed by the archive's report (one
#: transaction: the instance first, then the report's summary), its bytes checked after
#: confirmation (``verify.at_confirmation = sample``), a delete permitted after the delete-time
#: byte sample (``verify.delete_sample = 1``), a query relayed.
EXPECTED = [
    "instance.received",
    "instance.forwarded",
    "delete.requested",
    "delete.refused",
    "commitment.requested",
    "instance.confirmed",
    "commitment.reported",
    "bytes.checked",
    "delete.requested",
    "bytes.checked",
    "delete.permitted",
    "query.relayed",
]


def _events(records: list[dict[str, object]]) -> list[object]:
    return [r["event"] for r in records]


def _cli_json(guard: GuardProcess, *args: str) -> list[dict[str, object]]:
    result = guard.cli("audit", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_a_study_history_reads_first_receipt_to_last_decision(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Receive, forward, refused delete, confirm, permitted delete, relayed query: the same history by every channel."""
    http_port = free_port()
    guard = guard_factory(
        archive_port=orthanc_archive.dicom_port,
        # The study waits this long before the commitment request: time for a refused delete. A
        # `guard delete` takes seconds to start on a loaded machine (it imports the whole guard).
        confirm={"batch_wait": 20},
        delete={"source_check": False},
        http={"port": http_port, "bind": "127.0.0.1"},
    )
    orthanc_archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    guard.start()
    study = synthetic_study(1)
    result = storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert store_responses(result) == ["Success"], result.stdout + result.stderr
    wait_until(lambda: set(guard.instance_states().values()) == {"forwarded"}, 30, message="not forwarded")
    refused = guard.cli("delete", study.study_uid, "--reason", "migration clean-up")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="not confirmed")
    wait_until(lambda: guard.audit_records("bytes.checked"), 60, message="not byte-checked after confirmation")
    permitted = guard.cli("delete", study.study_uid, "--reason", "migration clean-up")
    assert permitted.returncode == 0, permitted.stdout + permitted.stderr
    answers = findscu(
        "127.0.0.1", guard.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE, level="STUDY", keys={"StudyInstanceUID": study.study_uid}
    )
    assert [str(a.StudyInstanceUID) for a in answers] == [study.study_uid]

    history = _cli_json(guard, "--study", study.study_uid)
    assert _events(history) == EXPECTED, _events(history)
    seqs = [r["seq"] for r in history]
    assert seqs == sorted(seqs)
    assert history[3]["detail"]["reasons"] == ["unconfirmed"]
    assert history[EXPECTED.index("delete.permitted")]["outcome"] == "success"
    assert [r["actor"] for r in history if r["event"] == "bytes.checked"] == ["confirmation", "delete"]
    assert history[0]["actor"] == SOURCE_AE

    rows = list(csv.DictReader(io.StringIO(guard.cli("audit", "--study", study.study_uid, "--format", "csv").stdout)))
    assert [r["event"] for r in rows] == EXPECTED
    assert json.loads(rows[3]["detail"])["reasons"] == ["unconfirmed"]

    table = guard.cli("audit", "--study", study.study_uid)
    assert table.returncode == 0, table.stderr
    assert f"History of study {study.study_uid}" in table.stdout
    positions = [table.stdout.find(event) for event in dict.fromkeys(EXPECTED)]
    assert -1 not in positions

    assert _events(_cli_json(guard, "--study", study.study_uid, "--event", "delete.refused")) == ["delete.refused"]
    assert _events(_cli_json(guard, "--study", study.study_uid, "--outcome", "refused")) == ["delete.refused"]
    assert _events(_cli_json(guard, "--study", study.study_uid, "--ae", SOURCE_AE))[:1] == ["instance.received"]
    assert _cli_json(guard, "--study", study.study_uid, "--limit", "2") == history[:2]
    patient = str(pydicom.dcmread(study.paths[0], stop_before_pixels=True).PatientID)
    assert history[0]["patient_id"] == patient
    by_patient = _cli_json(guard, "--patient", patient, "--event", "instance.received")
    assert [r["study_uid"] for r in by_patient if r["study_uid"] == study.study_uid] == [study.study_uid]

    base = f"http://127.0.0.1:{http_port}/audit"
    page = httpx.get(base, params={"study": study.study_uid, "limit": 4}, timeout=10).json()
    records = page["records"]
    while page["next"] is not None:
        page = httpx.get(base, params={"study": study.study_uid, "limit": 4, "after": page["next"]}, timeout=10).json()
        records += page["records"]
    assert records == history
    refusals = httpx.get(base, params={"study": study.study_uid, "outcome": "refused"}, timeout=10).json()["records"]
    assert _events(refusals) == ["delete.refused"]
    by_ae = httpx.get(base, params={"study": study.study_uid, "ae": SOURCE_AE, "event": "instance.received"}, timeout=10).json()
    assert _events(by_ae["records"]) == ["instance.received"]


def test_audit_verify_names_the_tampered_record(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """`guard audit verify` passes on an untouched ledger and exits 1 naming the record after a one-byte change."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port).start()
    study = synthetic_study(2)
    assert store_responses(storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)) == ["Success"] * 2
    assert guard.terminate() == 0
    ok = guard.cli("audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact" in ok.stdout
    victim = guard.audit_records("instance.received")[1]["seq"]
    with guard.ledger_engine() as engine, engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_log SET actor = 'STORESCV' WHERE seq = ?", (victim,))
    broken = guard.cli("audit", "verify")
    assert broken.returncode == 1
    assert f"BROKEN at record {victim}" in broken.stdout
    guard.start()  # the start-up check of the chain's tail raises the alarm
    alerts = [r for r in guard.audit_records("security.alert") if r["detail"].get("alert") == "audit-chain-broken"]
    assert [a["detail"]["seq"] for a in alerts] == [victim]


def test_an_instance_whose_audit_record_cannot_be_written_is_not_acknowledged(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """With the audit store refusing instance.received (a real trigger), the C-STORE fails and the instance is not in the ledger."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port).start()
    with guard.ledger_engine() as engine, engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_receipts BEFORE INSERT ON audit_log"
            " WHEN NEW.event = 'instance.received' AND NEW.outcome = 'success'"
            " BEGIN SELECT RAISE(ABORT, 'audit store refused'); END"
        )
    study = synthetic_study(1)
    responses = store_responses(storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE))
    assert len(responses) == 1
    assert responses != ["Success"]
    assert guard.instance_states() == {}
    (refusal,) = guard.audit_records("instance.received")
    assert (refusal["outcome"], refusal["detail"]["reason"]) == ("failure", "ledger-unavailable")
