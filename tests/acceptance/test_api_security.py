"""Admin API security over real HTTP: scoped hashed tokens, identities in the audit log, rate limiting, HTTPS.

The first tests run the API on a real uvicorn server over a real SQLite ledger (as
``test_http_api``); the last ones run ``guard serve`` as a process, with HTTPS, and check
that neither its log nor ``guard config check`` ever shows a secret, and that patient
identifiers leave the log (but not the audit table) with ``log.redact_patient_data``.
"""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard.config.settings import Settings
from guard.domain.states import AuditEvent, InstanceState
from guard.http.app import create_app
from guard.http.server import AdminServer
from guard.ledger.db import migrate, open_engine
from guard.ledger.ledger import Ledger
from guard.sandbox.archive import ReferenceArchive
from guard.services.delete.gate import DeleteGate
from guard.web.backends import make_backend
from tests.acceptance.conftest import GuardFactory
from tests.acceptance.test_http_api import audited, new_study_uid, seed
from tests.support.certs import TestCA
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE
from tests.support.ports import LOOPBACK, free_port
from tests.support.waiting import wait_until

READER, DELETER, LEGACY = "reader-token-1", "deleter-token-2", "legacy-admin-token-3"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKENS = [
    {"identity": "dashboard", "scopes": ["read"], "sha256": _sha(READER)},
    {"identity": "pacs-admin", "scopes": ["delete"], "sha256": _sha(DELETER)},
]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A migrated SQLite ledger."""
    engine = open_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    migrate(engine)
    led = Ledger(engine)
    yield led
    led.dispose()


ApiFactory = Callable[..., str]


@pytest.fixture
def api(ledger: Ledger, tmp_path: Path) -> Iterator[ApiFactory]:
    """Start an admin API with the given [http] settings; returns its base URL."""
    servers: list[AdminServer] = []

    def start(**http: Any) -> str:
        settings = Settings.model_validate(
            {
                "node": {"data_dir": str(tmp_path / "data")},
                # No archive runs here (these tests are about the API's tokens): no live C-FIND,
                # and no delete-time byte sample, which would have to retrieve from it.
                "delete": {"reverify": False, "source_check": False},
                "verify": {"delete_sample": 0},
                "http": {"bind": LOOPBACK, "port": free_port(), "token": LEGACY, "tokens": TOKENS, **http},
            }
        )
        gate = DeleteGate(settings, ledger, make_backend(settings.delete))
        server = AdminServer(create_app(settings, ledger, gate, lambda: {"ledger": True}), host=LOOPBACK, port=settings.http.port)
        servers.append(server.start())
        return server.url

    yield start
    for server in servers:
        server.stop()


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _alerts(ledger: Ledger, alert: str) -> list[Any]:
    return [r for r in audited(ledger, AuditEvent.SECURITY_ALERT) if f'"alert": "{alert}"' in r.detail]


def test_delete_needs_the_delete_scope_and_records_the_identity(api: ApiFactory, ledger: Ledger) -> None:
    """A read-only token gets 403; a delete token is accepted and its identity is the actor; the legacy token is 'admin'."""
    base = api()
    study = new_study_uid()
    seed(ledger, study, 2, InstanceState.CONFIRMED)
    with httpx.Client(base_url=base, timeout=10) as client:
        forbidden = client.delete(f"/studies/{study}", headers=_bearer(READER))
        assert forbidden.status_code == 403, forbidden.text
        assert "delete" in forbidden.json()["detail"]
        (alert,) = _alerts(ledger, "bad-token")
        assert alert.actor == "dashboard"
        assert '"problem": "insufficient-scope"' in alert.detail
        assert audited(ledger, AuditEvent.DELETE_REQUESTED) == []
        permitted = client.delete(f"/studies/{study}", headers=_bearer(DELETER))
        assert permitted.status_code == 200, permitted.text
        other = new_study_uid()
        assert client.delete(f"/studies/{other}", headers=_bearer(LEGACY)).status_code == 409
    actors = [(r.study_uid, r.actor) for r in audited(ledger, AuditEvent.DELETE_REQUESTED)]
    assert actors == [(study, "pacs-admin"), (other, "admin")]
    assert [r.actor for r in audited(ledger, AuditEvent.DELETE_PERMITTED)] == ["pacs-admin"]
    assert all(t not in r.detail for r in audited(ledger, AuditEvent.SECURITY_ALERT) for t in (READER, DELETER, LEGACY))


def test_reads_are_open_by_default(api: ApiFactory) -> None:
    """Without http.read_requires_token, /studies, /audit and /status answer without a token."""
    base = api()
    with httpx.Client(base_url=base, timeout=10) as client:
        for path in (f"/studies/{new_study_uid()}", "/audit", "/status"):
            assert client.get(path).status_code == 200, path


def test_reads_need_a_read_token_when_configured(api: ApiFactory) -> None:
    """With read_requires_token: 401 without a token, 403 with a delete-only one, 200 with read; probes stay open."""
    base = api(read_requires_token=True)
    with httpx.Client(base_url=base, timeout=10) as client:
        for path in (f"/studies/{new_study_uid()}", "/audit", "/status"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=_bearer(DELETER)).status_code == 403, path
            assert client.get(path, headers=_bearer(READER)).status_code == 200, path
            assert client.get(path, headers=_bearer(LEGACY)).status_code == 200, path
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200, path


def test_failed_authentication_is_rate_limited_per_address(api: ApiFactory, ledger: Ledger) -> None:
    """After 3 failures an address gets 429 with Retry-After, even with a good token; other addresses are not affected; it ends."""
    base = api(auth_failures_max=3, auth_failures_window=2.0)
    study = new_study_uid()
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(3):
            assert client.delete(f"/studies/{study}", headers=_bearer("guess")).status_code == 401
        limited = client.delete(f"/studies/{study}", headers=_bearer(DELETER))
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 2
        assert client.delete(f"/studies/{study}", headers=_bearer("guess")).status_code == 429
        with httpx.Client(base_url=base, timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
            assert other.delete(f"/studies/{study}", headers=_bearer(DELETER)).status_code == 409
        # One audit record per lockout, not one per refused request.
        assert len(_alerts(ledger, "rate-limited")) == 1
        assert len(_alerts(ledger, "bad-token")) == 3
        wait_until(lambda: client.delete(f"/studies/{study}", headers=_bearer(DELETER)).status_code == 409, 10, interval=0.25)


def test_token_hash_command_matches_sha256() -> None:
    """``guard token hash`` reads the token on stdin and prints what [[http.tokens]] sha256 expects."""
    result = subprocess.run(
        [sys.executable, "-m", "guard", "token", "hash"], input=f"{DELETER}\n", capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == _sha(DELETER)


# -- guard serve as a process ----------------------------------------------------------------

SECRET_TOKEN = "Zk7-very-secret-admin-token"
SECRET_PASSWORD = "Pw9-backend-password"
PATIENT_ID = "PAT-REDACT-4711"


def test_https_api_no_secret_in_logs_and_patient_data_redacted(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, tmp_path: Path
) -> None:
    """Guard serve over HTTPS: the token works, its identity is audited; no secret in the log or config check; no Patient ID in the log."""
    ca = TestCA(tmp_path / "pki")
    cert = ca.issue("guard-api")
    http_port = free_port()
    guard = guard_factory(
        archive_port=ref_archive.port,
        http={"port": http_port, "token": SECRET_TOKEN, "certificate": str(cert.certificate), "private_key": str(cert.private_key)},
        delete={"backend": "dicomweb", "url": f"http://guard:{SECRET_PASSWORD}@127.0.0.1:9/dicomweb"},
        log={"redact_patient_data": True},
    ).start()
    study = synthetic_study(2, patient_id=PATIENT_ID)
    assert store_responses(storescu(LOOPBACK, guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)) == ["Success"] * 2
    served = ssl.get_server_certificate((LOOPBACK, http_port))
    assert hashlib.sha256(ssl.PEM_cert_to_DER_cert(served)).hexdigest() == cert.sha256
    context = ssl.create_default_context(cafile=str(ca.ca_file))
    with httpx.Client(base_url=f"https://{LOOPBACK}:{http_port}", verify=context, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        assert client.delete(f"/studies/{study.study_uid}", headers=_bearer("wrong")).status_code == 401
        refused = client.delete(f"/studies/{study.study_uid}", headers=_bearer(SECRET_TOKEN))
        assert refused.status_code == 409, refused.text
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{LOOPBACK}:{http_port}/healthz", timeout=5)
    health = guard.cli("health")
    assert health.returncode == 0, health.stdout + health.stderr
    check = guard.cli("config", "check")
    assert check.returncode == 0, check.stderr
    assert "***" in check.stdout
    requested = guard.audit_records("delete.requested")
    assert [r["actor"] for r in requested] == ["admin"]
    received = guard.audit_records("instance.received")
    assert {r["patient_id"] for r in received} == {PATIENT_ID}
    guard.terminate()
    log = guard.log_path.read_text()
    assert any(r.get("event") == "instance.received" for r in guard.log_records())
    for text in (log, check.stdout + check.stderr, health.stdout + health.stderr):
        assert SECRET_TOKEN not in text
        assert SECRET_PASSWORD not in text
    assert PATIENT_ID not in log
    assert f"TEST^{PATIENT_ID}" not in log
