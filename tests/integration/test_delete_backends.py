"""Delete backends against real HTTP servers: a DICOMweb-style endpoint, and failures that must not count as deletes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import update

from guard.config.settings import Settings
from guard.ledger.db import migrate, open_engine
from guard.ledger.instances import ReceivedInstance, record_received, study_deleted_at
from guard.ledger.ledger import Ledger
from guard.ledger.schema import instances
from guard.services.delete.gate import DeleteGate
from guard.web.backends import make_backend

STUDY = "1.2.3.4"


class DicomWebStub(BaseHTTPRequestHandler):
    """Records DELETE paths; answers 204, or 500 when the server's ``fail`` flag is set."""

    def do_DELETE(self) -> None:
        server = self.server
        server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(500 if server.fail else 204)  # type: ignore[attr-defined]
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def dicomweb() -> Iterator[ThreadingHTTPServer]:
    """A real HTTP server on loopback standing in for a DICOMweb origin."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), DicomWebStub)
    server.paths = []  # type: ignore[attr-defined]
    server.fail = False  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join(5)


def _ledger(tmp_path: Path) -> Ledger:
    engine = open_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    migrate(engine)
    ledger = Ledger(engine)
    with ledger.transaction() as tx:
        record_received(
            tx,
            ReceivedInstance(
                "1.2.3.4.1",
                STUDY,
                "1.2.3.4.0",
                "1.2.840.10008.5.1.4.1.1.2",
                "1.2.840.10008.1.2.1",
                1,
                "a" * 64,
                "x.dcm",
                None,
                "CT",
                "PACS",
                "127.0.0.1",
            ),
        )
        tx.conn.execute(update(instances).values(state="confirmed"))
    return ledger


def _gate(ledger: Ledger, backend: str, url: str) -> DeleteGate:
    # No archive runs here (these tests are about the backends): no live C-FIND, no delete-time byte sample.
    settings = Settings.model_validate(
        {"delete": {"backend": backend, "url": url, "reverify": False, "source_check": False}, "verify": {"delete_sample": 0}}
    )
    return DeleteGate(settings, ledger, make_backend(settings.delete))


def test_dicomweb_backend_sends_delete_for_the_study(tmp_path: Path, dicomweb: ThreadingHTTPServer) -> None:
    """A permitted delete with the dicomweb backend is DELETE {url}/studies/{uid}; the study is recorded as deleted."""
    ledger = _ledger(tmp_path)
    gate = _gate(ledger, "dicomweb", f"http://127.0.0.1:{dicomweb.server_address[1]}/dicom-web")
    outcome = gate.request(STUDY, channel="cli", requester="test", peer_address=None, reason=None)
    assert (outcome.decision.permitted, outcome.carried_out) == (True, True)
    assert dicomweb.paths == [f"/dicom-web/studies/{STUDY}"]  # type: ignore[attr-defined]
    assert study_deleted_at(ledger, STUDY) is not None


@pytest.mark.parametrize("backend", ["dicomweb", "orthanc"])
def test_backend_failure_is_reported_and_the_study_is_not_marked_deleted(
    tmp_path: Path, dicomweb: ThreadingHTTPServer, backend: str
) -> None:
    """A backend answering an error (or not there at all) leaves the study not deleted, and says so."""
    dicomweb.fail = True  # type: ignore[attr-defined]
    ledger = _ledger(tmp_path)
    url = f"http://127.0.0.1:{dicomweb.server_address[1]}" if backend == "dicomweb" else "http://127.0.0.1:9"
    outcome = _gate(ledger, backend, url).request(STUDY, channel="cli", requester="test", peer_address=None, reason=None)
    assert outcome.decision.permitted
    assert not outcome.carried_out
    assert outcome.backend_error
    assert study_deleted_at(ledger, STUDY) is None
