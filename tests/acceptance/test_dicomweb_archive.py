"""A DICOMweb archive end to end: ``guard serve`` between DCMTK storescu and Orthanc with Debian's DICOMweb plugin.

Forwarding by STOW-RS, confirmation and the delete gate's live check by QIDO-RS, the probe by
an HTTP query, WADO-RS digests against the receipt digests; an archive that is down, one that
refuses instances, and one that refuses the guard's credentials.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from guard.config.settings import ArchiveSettings
from guard.ledger.schema import instances
from guard.web.dicomweb import DicomWebArchive
from tests.acceptance.conftest import GuardFactory
from tests.support.dcmtk import store_responses, storescu
from tests.support.dicomweb import DicomWebOrthanc, require_dicomweb
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.slow]

TOKEN = "the-archive-token"


def _dicomweb_guard(guard_factory: GuardFactory, url: str, **overrides: Any) -> GuardProcess:
    """A guard whose archive is the DICOMweb service at ``url``; deletes decided only (the caller deletes)."""
    archive = {"protocol": "dicomweb", "url": url, "probe_interval": 0.5, **overrides.pop("archive", {})}
    return guard_factory(archive_port=free_port(), archive=archive, delete={"source_check": False}, **overrides)


def _send(guard: GuardProcess, paths: list[Path]) -> None:
    result = storescu("127.0.0.1", guard.port, paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert ["Success"] * len(paths) == store_responses(result)


def _delete(guard: GuardProcess, study_uid: str) -> tuple[int, str]:
    result = guard.cli("delete", study_uid, "--reason", "archive move")
    return result.returncode, result.stdout + result.stderr


def _receipt_digests(guard: GuardProcess) -> dict[str, str]:
    with guard.ledger_engine() as engine, engine.connect() as conn:
        rows = conn.execute(select(instances.c.sop_instance_uid, instances.c.sha256)).all()
    return {row.sop_instance_uid: row.sha256 for row in rows}


def _reachable(guard: GuardProcess) -> float | None:
    """The value of guard_archive_reachable on /metrics (None before the first probe)."""
    text = httpx.get(f"http://127.0.0.1:{guard.config['http']['port']}/metrics", timeout=10).text
    values = [line.split()[-1] for line in text.splitlines() if line.startswith("guard_archive_reachable ")]
    return float(values[0]) if values else None


def test_forwarded_by_stow_confirmed_by_qido_and_gated(
    guard_factory: GuardFactory, dicomweb_archive: DicomWebOrthanc, synthetic_study: StudyFactory
) -> None:
    """STOW-RS forwards, QIDO-RS confirms, WADO-RS digests equal the receipt digests; the gate refuses each unsafe case, then permits."""
    # find_delay: time for `guard delete` to refuse before the confirmation, even on a loaded machine.
    # The delete-time byte sample is off here: these are the QIDO-RS scenarios, and a sample that
    # drew the instance removed below would (rightly) send it back and change the later refusals.
    # The next test takes the delete-time sample by WADO-RS.
    guard = _dicomweb_guard(
        guard_factory,
        dicomweb_archive.dicomweb_url,
        confirm={"find_delay": 20},
        verify={"delete_sample": 0},
        http={"port": free_port()},
    )
    guard.start()
    study = synthetic_study(3)
    _send(guard, study.paths)
    wait_until(lambda: set(guard.instance_states().values()) == {"forwarded"}, 60, message="not forwarded")
    code, text = _delete(guard, study.study_uid)
    assert (code, "unconfirmed" in text) == (3, True), text

    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 90, message=f"not confirmed:\n{guard.log_tail()}")
    # The byte check after confirmation (one per series, by WADO-RS) before the archive loses anything.
    wait_until(lambda: guard.audit_records("bytes.checked"), 60, message="no byte check after confirmation")
    assert set(study.sop_instance_uids) == dicomweb_archive.instance_uids_of_study(study.study_uid)
    archive = DicomWebArchive(ArchiveSettings(protocol="dicomweb", url=dicomweb_archive.dicomweb_url), timeout=20)  # type: ignore[arg-type]
    assert _receipt_digests(guard) == dict(archive.digests(study.study_uid, study.series_uids[0], study.sop_instance_uids))
    assert wait_until(lambda: _reachable(guard), 30, message="never probed") == 1.0

    assert dicomweb_archive.delete_instance(study.sop_instance_uids[1])
    code, text = _delete(guard, study.study_uid)
    assert (code, "missing-in-archive" in text) == (3, True), text
    dicomweb_archive.upload([study.paths[1]])

    dicomweb_archive.stop()
    wait_until(lambda: _reachable(guard) == 0.0, 30, message="the probe did not notice the archive stopped")
    code, text = _delete(guard, study.study_uid)
    assert (code, "archive-unreachable" in text) == (3, True), text
    dicomweb_archive.start()

    code, text = _delete(guard, study.study_uid)
    assert code == 0, text
    refusals = [r["detail"]["reasons"] for r in guard.audit_records("delete.refused")]
    assert refusals == [["unconfirmed"], ["missing-in-archive"], ["archive-unreachable"]]
    started = guard.audit_records("service.started")[-1]
    assert dicomweb_archive.dicomweb_url == started["detail"]["archive"]
    # Proof of bytes came by WADO-RS: the sample after confirmation matched.
    [check] = guard.audit_records("bytes.checked")
    assert (check["detail"]["method"], check["detail"]["found_by"], check["outcome"]) == ("wado-rs", "confirmation", "success")


def test_the_delete_time_byte_sample_is_taken_by_wado_rs(
    guard_factory: GuardFactory, dicomweb_archive: DicomWebOrthanc, synthetic_study: StudyFactory
) -> None:
    """A permitted delete took its byte sample (one instance per series) from the DICOMweb archive by WADO-RS, and it matched."""
    guard = _dicomweb_guard(guard_factory, dicomweb_archive.dicomweb_url, verify={"at_confirmation": "none"}).start()
    study = synthetic_study(2)
    _send(guard, study.paths)
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 90, message=f"not confirmed:\n{guard.log_tail()}")
    code, text = _delete(guard, study.study_uid)
    assert code == 0, text
    [check] = guard.audit_records("bytes.checked")
    assert (check["detail"]["method"], check["detail"]["found_by"], check["outcome"]) == ("wado-rs", "delete", "success")
    assert check["detail"]["checked"] == 1


def test_an_archive_that_is_down_is_retried_until_it_is_back(
    guard_factory: GuardFactory, tmp_path: Path, synthetic_study: StudyFactory
) -> None:
    """STOW-RS to a stopped archive: the instances fail transiently (retried, never dead-lettered), then are forwarded and confirmed."""
    require_dicomweb()
    orthanc = DicomWebOrthanc(tmp_path / "orthanc-later")  # ports chosen, not started yet
    guard = _dicomweb_guard(guard_factory, orthanc.dicomweb_url).start()
    study = synthetic_study(2)
    _send(guard, study.paths)
    try:
        wait_until(lambda: len(guard.audit_records("instance.failed")) >= 4, 60, message="no retried failures")
        assert {"failed", "pending"} >= set(guard.instance_states().values())
        assert guard.audit_records("instance.dead_lettered") == []
        assert all("ConnectError" in r["detail"]["error"] for r in guard.audit_records("instance.failed"))
        orthanc.start()
        wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 90, message=f"not confirmed:\n{guard.log_tail()}")
        assert set(study.sop_instance_uids) == orthanc.instance_uids_of_study(study.study_uid)
    finally:
        orthanc.stop()


class _StrictStow(BaseHTTPRequestHandler):
    """A STOW-RS service answering every store with the server's ``reason`` as Failure Reason (409), or storing (200)."""

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        remaining = length
        while remaining:  # read the streamed body in full, as an archive does
            remaining -= len(self.rfile.read(min(remaining, 1 << 16)))
        reason = self.server.reason  # type: ignore[attr-defined]
        self.server.bodies.append((self.headers["Content-Type"], length))  # type: ignore[attr-defined]
        sequence = "00081198" if reason else "00081199"
        item: dict[str, Any] = {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}}
        if reason:
            item["00081197"] = {"vr": "US", "Value": [reason]}
        body = json.dumps({sequence: {"vr": "SQ", "Value": [item]}}).encode()
        self.send_response(409 if reason else 200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def strict_stow() -> Iterator[ThreadingHTTPServer]:
    """A real HTTP server on loopback answering STOW-RS like a strict archive (Orthanc 1.10 stores nearly anything).

    It stands in for an archive that refuses instances with a Failure Reason, which the
    Orthanc DICOMweb plugin of Debian 12 never does for a valid data set.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StrictStow)
    server.reason = 0xA900  # type: ignore[attr-defined]
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join(5)


def test_failure_reasons_dead_letter_or_retry(
    guard_factory: GuardFactory, strict_stow: ThreadingHTTPServer, synthetic_study: StudyFactory
) -> None:
    """Failure Reason 0xA900 dead-letters at once (one attempt); 0xA700 is retried with backoff and forwarded once the archive takes it."""
    url = f"http://127.0.0.1:{strict_stow.server_address[1]}/dicom-web"
    guard = _dicomweb_guard(guard_factory, url).start()
    refused = synthetic_study(1)
    _send(guard, refused.paths)
    wait_until(lambda: guard.audit_records("instance.dead_lettered"), 60, message="not dead-lettered")
    (dead,) = guard.audit_records("instance.dead_lettered")
    assert (dead["detail"]["status"], dead["detail"]["attempts"]) == ("0xA900", 1)
    assert "permanent failure: STOW-RS StoreInstances" in dead["detail"]["reason"]
    content_type, length = strict_stow.bodies[0]  # type: ignore[attr-defined]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    assert refused.paths[0].stat().st_size < length

    strict_stow.reason = 0xA700  # type: ignore[attr-defined]
    later = synthetic_study(1)
    _send(guard, later.paths)
    wait_until(lambda: len(guard.audit_records("instance.failed")) >= 2, 60, message="not retried")
    assert {"0xA700"} == {r["detail"]["status"] for r in guard.audit_records("instance.failed")}
    strict_stow.reason = 0  # type: ignore[attr-defined]
    wait_until(lambda: guard.instance_states().get(later.sop_instance_uids[0]) == "forwarded", 60, message="not forwarded")
    assert guard.instance_states()[refused.sop_instance_uids[0]] == "dead-lettered"


def test_credentials_the_archive_refuses_are_a_clear_error(
    guard_factory: GuardFactory, tmp_path: Path, synthetic_study: StudyFactory
) -> None:
    """A wrong bearer token: forwarding fails with 'refused the credentials', nothing is dead-lettered, and the right token fixes it."""
    require_dicomweb()
    token_file = tmp_path / "archive-token"
    token_file.write_text("wrong-token\n")
    with DicomWebOrthanc(tmp_path / "orthanc-bearer", bearer_token=TOKEN) as orthanc:
        guard = _dicomweb_guard(guard_factory, orthanc.dicomweb_url, archive={"auth": "bearer", "token_file": str(token_file)})
        guard.start()
        study = synthetic_study(1)
        _send(guard, study.paths)
        wait_until(lambda: len(guard.audit_records("instance.failed")) >= 2, 60, message="no failure")
        errors = {r["detail"]["error"] for r in guard.audit_records("instance.failed")}
        assert all("HTTP 403" in e and "refused the credentials (check archive.auth and its file)" in e for e in errors), errors
        assert guard.audit_records("instance.dead_lettered") == []
        assert "wrong-token" not in guard.log_path.read_text()

        token_file.write_text(TOKEN + "\n")  # read at each request: no restart needed
        wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 90, message=f"not confirmed:\n{guard.log_tail()}")
        assert TOKEN not in guard.log_path.read_text()


def test_missing_credentials_file_stops_config_check(guard_factory: GuardFactory, tmp_path: Path) -> None:
    """Guard config check names archive.token_file when the file is missing, and exits non-zero."""
    guard = _dicomweb_guard(
        guard_factory, "https://vna.example/dicom-web", archive={"auth": "bearer", "token_file": str(tmp_path / "missing")}
    )
    guard.workdir.mkdir(parents=True, exist_ok=True)
    from tests.support.guard import render_toml  # noqa: PLC0415 - only this test writes the file without starting

    guard.config_path.write_text(render_toml(guard.config))
    result = guard.cli("config", "check")
    assert (result.returncode != 0, "archive.token_file: cannot read" in result.stdout + result.stderr) == (True, True), result


def test_an_archive_that_says_stored_but_does_not_list_is_never_believed(
    guard_factory: GuardFactory, tmp_path: Path, synthetic_study: StudyFactory
) -> None:
    """STOW-RS success for an instance Orthanc's Lua filter dropped: QIDO-RS finds it missing; re-sent, then dead-lettered."""
    require_dicomweb()
    script = tmp_path / "drop.lua"
    script.write_text("function ReceivedInstanceFilter(dicom, origin, info)\n  return dicom.PatientID ~= 'DROPPED'\nend\n")
    with DicomWebOrthanc(tmp_path / "orthanc-lying", extra_config={"LuaScripts": [str(script)]}) as orthanc:
        guard = _dicomweb_guard(guard_factory, orthanc.dicomweb_url, confirm={"max_resends": 1}).start()
        study = synthetic_study(1, patient_id="DROPPED")
        _send(guard, study.paths)
        states = guard.instance_states
        wait_until(lambda: set(states().values()) == {"dead-lettered"}, 90, message=f"not dead-lettered:\n{guard.log_tail()}")
        assert set() == orthanc.instance_uids_of_study(study.study_uid)
        assert len(guard.audit_records("instance.forwarded")) == 2  # the first send and one re-send, each "stored" by STOW-RS
        assert len(guard.audit_records("instance.missing_in_archive")) == 2
        assert guard.audit_records("instance.confirmed") == []
        code, text = _delete(guard, study.study_uid)
        assert (code, "dead-lettered" in text) == (3, True), text
