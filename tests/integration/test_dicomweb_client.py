"""The DICOMweb archive client against a real Orthanc with Debian's DICOMweb plugin: STOW-RS, QIDO-RS, WADO-RS and credentials."""

from __future__ import annotations

import shutil
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from guard.config.settings import ArchiveSettings
from guard.domain.errors import ArchiveUnreachableError
from guard.spool import Spool
from guard.web.dicomweb import DicomWebArchive
from tests.support.certs import TestCA
from tests.support.datasets import Study, make_study
from tests.support.dicomweb import DicomWebOrthanc, require_dicomweb, running_dicomweb

pytestmark = [pytest.mark.interop]

TOKEN = "token-of-the-guard"


def _archive(orthanc: DicomWebOrthanc, **settings: object) -> DicomWebArchive:
    return DicomWebArchive(ArchiveSettings(protocol="dicomweb", url=orthanc.dicomweb_url, **settings), timeout=20)  # type: ignore[arg-type]


def _receipt_digests(study: Study, tmp_path: Path) -> dict[str, str]:
    """The digests the spool records on receipt, for copies of the study's files."""
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    digests = {}
    for sop, path in zip(study.sop_instance_uids, study.paths, strict=True):
        temp = spool.incoming / sop
        shutil.copyfile(path, temp)
        digests[sop] = spool.place(temp, study.study_uid, sop).sha256
    return digests


@pytest.fixture
def bearer_archive(tmp_path: Path) -> Iterator[DicomWebOrthanc]:
    """An Orthanc DICOMweb archive that answers only requests carrying the bearer token TOKEN."""
    yield from running_dicomweb(tmp_path / "orthanc-bearer", bearer_token=TOKEN)


def test_stow_qido_and_wado_digests_equal_the_receipt_digests(dicomweb_archive: DicomWebOrthanc, tmp_path: Path) -> None:
    """Instances stored by STOW-RS are listed by QIDO-RS (page by page) and their WADO-RS digests equal the spool's."""
    study = make_study(tmp_path / "study", 5, series_per_study=1)
    archive = DicomWebArchive(
        ArchiveSettings(protocol="dicomweb", url=dicomweb_archive.dicomweb_url),
        timeout=20,
        page_size=2,  # type: ignore[arg-type]
    )
    sender = archive.sender()
    try:
        statuses = [sender.send(path, "", "") for path in study.paths]
    finally:
        sender.close()
    assert statuses == [0] * 5
    assert set(study.sop_instance_uids) == dicomweb_archive.instance_uids_of_study(study.study_uid)
    assert set(study.sop_instance_uids) == archive.study_instances(study.study_uid)
    assert set() == archive.study_instances("1.2.3.4.5.6.7.8.9")

    unknown = "1.2.3.4.5.6.7.8.9.10"
    digests = archive.digests(study.study_uid, study.series_uids[0], [*study.sop_instance_uids, unknown])
    assert _receipt_digests(study, tmp_path) == dict(digests)


def test_bearer_token_from_its_file(bearer_archive: DicomWebOrthanc, tmp_path: Path) -> None:
    """With the right token the archive answers; a wrong token or an unreadable file is a clear error naming the settings."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    archive = _archive(bearer_archive, auth="bearer", token_file=token_file)
    archive.ping(10)
    study = make_study(tmp_path / "study", 1)
    assert archive.sender().send(study.paths[0], "", "") == 0

    token_file.write_text("not-the-token")
    with pytest.raises(ArchiveUnreachableError, match=r"HTTP 403.*refused the credentials \(check archive.auth"):
        archive.study_instances(study.study_uid)
    token_file.unlink()
    with pytest.raises(ArchiveUnreachableError, match=r"cannot use the archive's credentials: archive.token_file: cannot read"):
        archive.ping(10)
    without = _archive(bearer_archive)
    with pytest.raises(ArchiveUnreachableError, match="refused the credentials") as refused:
        without.sender().send(study.paths[0], "", "")
    assert "not-the-token" not in str(refused.value)
    assert TOKEN not in str(refused.value)


def test_basic_credentials_from_the_password_file(tmp_path: Path) -> None:
    """An Orthanc with registered users: the right password works, a wrong one is HTTP 401 and a clear error."""
    require_dicomweb()
    password_file = tmp_path / "password"
    password_file.write_text("right-password")
    with DicomWebOrthanc(tmp_path / "orthanc-basic", users={"guard": "right-password"}) as orthanc:
        archive = _archive(orthanc, auth="basic", username="guard", password_file=password_file)
        archive.ping(10)
        assert set() == archive.study_instances("1.2.3.4")
        password_file.write_text("wrong-password")
        with pytest.raises(ArchiveUnreachableError, match=r"HTTP 401.*refused the credentials") as refused:
            archive.ping(10)
        assert "wrong-password" not in str(refused.value)


def test_a_stopped_archive_is_unreachable(dicomweb_archive: DicomWebOrthanc, tmp_path: Path) -> None:
    """No connection: ArchiveUnreachableError from every transaction (never an empty listing)."""
    archive = _archive(dicomweb_archive)
    study = make_study(tmp_path / "study", 1)
    dicomweb_archive.stop()
    with pytest.raises(ArchiveUnreachableError, match="ConnectError"):
        archive.study_instances(study.study_uid)
    with pytest.raises(ArchiveUnreachableError, match="ConnectError"):
        archive.sender().send(study.paths[0], "", "")
    with pytest.raises(ArchiveUnreachableError, match="ConnectError"):
        archive.digests(study.study_uid, study.series_uids[0], study.sop_instance_uids)


class _EmptyQido(BaseHTTPRequestHandler):
    """Answers every QIDO-RS search with an empty array."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def https_qido(tmp_path: Path) -> Iterator[tuple[str, TestCA]]:
    """A real HTTPS server on loopback with a certificate from a test CA (Orthanc 1.10 of Debian 12 crashes on HTTPS connections)."""
    ca = TestCA(tmp_path / "pki")
    server_cert = ca.issue("archive")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmptyQido)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert.certificate, server_cert.private_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/dicom-web", ca
    server.shutdown()
    thread.join(5)


def test_https_checks_the_archive_certificate(https_qido: tuple[str, TestCA], tmp_path: Path) -> None:
    """Over https the certificate must chain to archive.ca_file: with another CA, unreachable; with it (or verify_tls off), served."""
    url, ca = https_qido

    def archive(**settings: object) -> DicomWebArchive:
        return DicomWebArchive(ArchiveSettings(protocol="dicomweb", url=url, **settings), timeout=20)  # type: ignore[arg-type]

    other = TestCA(tmp_path / "other-pki", name="another CA")
    with pytest.raises(ArchiveUnreachableError, match="CERTIFICATE_VERIFY_FAILED"):
        archive(ca_file=other.ca_file).ping(10)
    with pytest.raises(ArchiveUnreachableError, match="CERTIFICATE_VERIFY_FAILED"):
        archive().study_instances("1.2.3.4")  # the system's CAs do not know the test CA
    archive(ca_file=ca.ca_file).ping(10)
    assert set() == archive(ca_file=ca.ca_file).study_instances("1.2.3.4")
    assert set() == archive(verify_tls=False).study_instances("1.2.3.4")
