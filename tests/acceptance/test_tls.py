"""DICOM TLS (PS3.15 Annex B) between real DCMTK and Orthanc peers and ``guard serve``.

Every certificate is made by the test (``tests.support.certs``). The guard listens plain on
``node.port`` and with TLS on ``tls.port``; the source ``STORESCU`` is configured with
``tls = true``, so it is admitted only over TLS with a certificate signed by the guard's CA.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from guard.sandbox.archive import ReferenceArchive
from tests.acceptance.conftest import GuardFactory
from tests.support.certs import CertFiles, TestCA
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory, require_tools
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop


class Pki:
    """The test's CA, the guard's certificate, a good client and a client of another CA."""

    def __init__(self, folder: Path) -> None:
        self.ca = TestCA(folder / "ca")
        self.guard = self.ca.issue("guard")
        self.client = self.ca.issue("storescu")
        self.other_client = self.ca.issue("other-storescu")
        self.rogue_ca = TestCA(folder / "rogue", name="rogue CA")
        self.rogue = self.rogue_ca.issue("rogue")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Certificates for one test."""
    return Pki(tmp_path / "pki")


def _tls_config(pki: Pki, files: CertFiles | None = None) -> dict[str, Any]:
    files = files or pki.guard
    return {
        "port": free_port(),
        "certificate": str(files.certificate),
        "private_key": str(files.private_key),
        "ca_file": str(pki.ca.ca_file),
    }


def _tls_guard(guard_factory: GuardFactory, archive_port: int, pki: Pki, **source: Any) -> GuardProcess:
    return guard_factory(
        archive_port=archive_port,
        tls=_tls_config(pki),
        sources=[{"ae_title": SOURCE_AE, "host": "127.0.0.1", "port": free_port(), "tls": True, **source}],
    )


def _tls_send(guard: GuardProcess, paths: list[Path], ca_file: Path, client: CertFiles | None) -> subprocess.CompletedProcess[str]:
    """Send with storescu over TLS to the guard's TLS port, with ``client``'s certificate or none (anonymous TLS)."""
    auth = ["+tls", str(client.private_key), str(client.certificate)] if client else ["+tla"]
    extra = [*auth, "+cf", str(ca_file)]
    return storescu("127.0.0.1", guard.config["tls"]["port"], paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE, timeout=30, extra_args=extra)


def _alerts(guard: GuardProcess) -> list[dict[str, Any]]:
    return [r for r in guard.audit_records("security.alert") if r["detail"].get("alert") == "tls-handshake-refused"]


def test_storescu_with_a_client_certificate_stores_over_tls(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, pki: Pki
) -> None:
    """A TLS source with a certificate of the configured CA stores; the instances are forwarded and confirmed."""
    guard = _tls_guard(guard_factory, ref_archive.port, pki).start()
    ref_archive.add_requester(GUARD_AE, "127.0.0.1", guard.port)
    study = synthetic_study(3)
    result = _tls_send(guard, study.paths, pki.ca.ca_file, pki.client)
    assert store_responses(result) == ["Success"] * 3, result.stdout + result.stderr
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="not confirmed")
    assert [r["actor"] for r in guard.audit_records("association.accepted")][:1] == [SOURCE_AE]
    assert _alerts(guard) == []


def test_tls_source_on_the_plain_port_is_refused_and_audited(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, pki: Pki
) -> None:
    """A source configured with tls = true that calls the unencrypted listener gets A-ASSOCIATE-RJ (reason tls-required)."""
    guard = _tls_guard(guard_factory, ref_archive.port, pki).start()
    result = storescu("127.0.0.1", guard.port, synthetic_study(1).paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE, timeout=30)
    assert result.returncode != 0
    assert "Association Rejected" in result.stdout + result.stderr
    assert [r["detail"]["reason"] for r in guard.audit_records("association.rejected")] == ["tls-required"]
    assert guard.audit_records("association.accepted") == []
    assert guard.instance_states() == {}


@pytest.mark.parametrize(
    ("client", "ca", "reason"),
    [
        ("none", "guard", "no-client-certificate"),
        ("rogue", "guard", "untrusted-client-certificate"),
    ],
)
def test_client_without_a_valid_certificate_is_refused_and_audited(
    guard_factory: GuardFactory,
    ref_archive: ReferenceArchive,
    synthetic_study: StudyFactory,
    pki: Pki,
    client: str,
    ca: str,
    reason: str,
) -> None:
    """No client certificate, or one from another CA: the handshake fails, nothing is stored, a security alert names why."""
    guard = _tls_guard(guard_factory, ref_archive.port, pki).start()
    files = {"none": None, "rogue": pki.rogue}[client]
    ca_file = {"guard": pki.ca.ca_file}[ca]
    result = _tls_send(guard, synthetic_study(1).paths, ca_file, files)
    assert result.returncode != 0
    assert store_responses(result) == []
    wait_until(lambda: len(_alerts(guard)) == 1, 10, message="no security alert")
    (alert,) = _alerts(guard)
    assert alert["detail"]["reason"] == reason
    assert alert["peer_address"] == "127.0.0.1"
    assert alert["outcome"] == "refused"
    assert guard.instance_states() == {}
    # The listener keeps serving after refusals.
    assert store_responses(_tls_send(guard, synthetic_study(1).paths, pki.ca.ca_file, pki.client)) == ["Success"]


def test_plain_dicom_on_the_tls_port_is_refused(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, pki: Pki
) -> None:
    """An unencrypted association request sent to the TLS port is refused as not-tls."""
    guard = _tls_guard(guard_factory, ref_archive.port, pki).start()
    port = guard.config["tls"]["port"]
    result = storescu("127.0.0.1", port, synthetic_study(1).paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE, timeout=15)
    assert store_responses(result) == []
    wait_until(lambda: len(_alerts(guard)) == 1, 10, message="no security alert")
    assert _alerts(guard)[0]["detail"]["reason"] == "not-tls"


def test_pinned_certificate_is_required_for_its_ae_title(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, pki: Pki
) -> None:
    """With tls_fingerprint set, another certificate of the same CA is refused for that AE title; the pinned one stores."""
    guard = _tls_guard(guard_factory, ref_archive.port, pki, tls_fingerprint=pki.client.sha256).start()
    refused = _tls_send(guard, synthetic_study(1).paths, pki.ca.ca_file, pki.other_client)
    assert store_responses(refused) == []
    assert "Association Rejected" in refused.stdout + refused.stderr
    (rejected,) = guard.audit_records("association.rejected")
    assert rejected["detail"]["reason"] == "certificate-pin-mismatch"
    assert rejected["detail"]["certificate_sha256"] == pki.other_client.sha256
    assert store_responses(_tls_send(guard, synthetic_study(1).paths, pki.ca.ca_file, pki.client)) == ["Success"]


def test_certificates_are_reloaded_on_sighup(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, pki: Pki, tmp_path: Path
) -> None:
    """Replace the guard's certificate, key and CA files, send SIGHUP: clients of the new CA work, the old CA's are refused."""
    guard = _tls_guard(guard_factory, ref_archive.port, pki).start()
    assert store_responses(_tls_send(guard, synthetic_study(1).paths, pki.ca.ca_file, pki.client)) == ["Success"]
    new_ca = TestCA(tmp_path / "new-ca", name="new CA")
    new_guard, new_client = new_ca.issue("guard2"), new_ca.issue("storescu2")
    shutil.copyfile(new_guard.certificate, pki.guard.certificate)
    shutil.copyfile(new_guard.private_key, pki.guard.private_key)
    shutil.copyfile(new_ca.ca_file, pki.ca.ca_file)
    assert guard.proc is not None
    guard.proc.send_signal(signal.SIGHUP)

    def reloaded() -> list[dict[str, Any]]:
        return [r for r in guard.audit_records("config.loaded") if r["detail"].get("reload") == "certificates"]

    wait_until(lambda: len(reloaded()) == 1, 15, message="no reload audited")
    (record,) = reloaded()
    assert record["outcome"] == "success"
    assert record["detail"]["dicom_tls_sha256"] == new_guard.sha256
    assert store_responses(_tls_send(guard, synthetic_study(1).paths, new_ca.ca_file, new_client)) == ["Success"]
    old = _tls_send(guard, synthetic_study(1).paths, new_ca.ca_file, pki.client)
    assert store_responses(old) == []
    assert guard.proc.poll() is None


def test_broken_certificate_on_sighup_keeps_the_old_one(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, pki: Pki
) -> None:
    """A half-written certificate file at reload is audited as a failure and the guard goes on with the old certificate."""
    guard = _tls_guard(guard_factory, ref_archive.port, pki).start()
    pki.guard.certificate.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")
    assert guard.proc is not None
    guard.proc.send_signal(signal.SIGHUP)
    wait_until(
        lambda: any(r["detail"].get("reload") == "certificates" for r in guard.audit_records("config.loaded")), 15, message="no reload"
    )
    (record,) = [r for r in guard.audit_records("config.loaded") if r["detail"].get("reload") == "certificates"]
    assert record["outcome"] == "failure"
    assert "tls.certificate" in record["detail"]["errors"][0]
    assert store_responses(_tls_send(guard, synthetic_study(1).paths, pki.ca.ca_file, pki.client)) == ["Success"]


def _tls_orthanc(tmp_path: Path, pki: Pki, guard_tls_port: int) -> tuple[Orthanc, CertFiles]:
    """An Orthanc archive that speaks only DICOM TLS and reports Storage Commitment to the guard's TLS port."""
    require_tools("Orthanc")
    files = pki.ca.issue("orthanc")
    guard_entry = {"AET": GUARD_AE, "Host": "127.0.0.1", "Port": guard_tls_port, "AllowStorageCommitment": True, "UseDicomTls": True}
    extra = {
        "DicomTlsEnabled": True,
        "DicomTlsCertificate": str(files.certificate),
        "DicomTlsPrivateKey": str(files.private_key),
        "DicomTlsTrustedCertificates": str(pki.ca.ca_file),
        "DicomTlsRemoteCertificateRequired": True,
        "DicomModalities": {"guard": guard_entry},
    }
    return Orthanc(tmp_path / "orthanc-tls", aet="ARCHIVE", extra_config=extra), files


def test_forwarding_to_a_tls_orthanc_archive_is_confirmed(
    guard_factory: GuardFactory, synthetic_study: StudyFactory, pki: Pki, tmp_path: Path
) -> None:
    """Orthanc with DICOM TLS as the archive: C-STORE and N-ACTION go out over TLS, the report comes back over TLS."""
    tls = _tls_config(pki)
    orthanc_process, orthanc_files = _tls_orthanc(tmp_path, pki, tls["port"])
    with orthanc_process as orthanc:
        guard = guard_factory(
            archive_port=orthanc.dicom_port,
            tls=tls,
            archive={"tls": True, "tls_fingerprint": orthanc_files.sha256},
        ).start()
        study = synthetic_study(4)
        sent = storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE, timeout=60)
        assert store_responses(sent) == ["Success"] * 4
        wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 90, message=f"not confirmed:\n{guard.log_tail()}")
        assert len(orthanc.rest().get("/instances").json()) == 4
        reports = guard.audit_records("commitment.reported")
        assert reports, "the archive's Storage Commitment report was not received"
        assert _alerts(guard) == []


def test_archive_with_another_certificate_than_its_pin_gets_nothing(
    guard_factory: GuardFactory, synthetic_study: StudyFactory, pki: Pki, tmp_path: Path
) -> None:
    """A TLS archive whose certificate (valid for the CA) is not the pinned one is never sent an instance; the log says why."""
    tls = _tls_config(pki)
    orthanc_process, _ = _tls_orthanc(tmp_path, pki, tls["port"])
    with orthanc_process as orthanc:
        guard = guard_factory(
            archive_port=orthanc.dicom_port, tls=tls, archive={"tls": True, "tls_fingerprint": pki.other_client.sha256}
        ).start()
        sent = storescu("127.0.0.1", guard.port, synthetic_study(2).paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE, timeout=60)
        assert store_responses(sent) == ["Success"] * 2
        wait_until(lambda: "pinned " + pki.other_client.sha256 in guard.log_path.read_text(), 30, message=guard.log_tail())
        assert set(guard.instance_states().values()) <= {"received", "failed"}
        assert orthanc.rest().get("/instances").json() == []
