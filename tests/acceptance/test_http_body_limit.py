"""Request bodies streamed chunked to the admin API over real HTTP (uvicorn): over the limit, refused before any handler runs."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard.config.settings import Settings
from guard.domain.states import AuditEvent, InstanceState
from guard.http.app import create_app
from guard.http.limits import BODY_TIMEOUT, MAX_BODY
from guard.http.server import AdminServer
from guard.ledger.db import migrate, open_engine
from guard.ledger.ledger import Ledger
from guard.services.delete.gate import DeleteGate
from guard.web.backends import make_backend
from tests.acceptance.test_http_api import TOKEN, Api, audited, new_study_uid, seed
from tests.support.ports import LOOPBACK, free_port
from tests.support.waiting import wait_until

BIG = 64 * 1024 * 1024


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The admin API on a real uvicorn server over a real SQLite ledger, with the decision-only backend."""
    engine = open_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    migrate(engine)
    ledger = Ledger(engine)
    settings = Settings.model_validate(
        {
            "node": {"data_dir": str(tmp_path / "data")},
            # No archive runs here: no live C-FIND, no delete-time byte sample.
            "delete": {"reverify": False, "source_check": False},
            "verify": {"delete_sample": 0},
            "http": {"bind": LOOPBACK, "port": free_port(), "token": TOKEN},
        }
    )
    app = create_app(settings, ledger, DeleteGate(settings, ledger, make_backend(settings.delete)), lambda: {"ledger": True})
    server = AdminServer(app, host=settings.http.bind, port=settings.http.port, start_timeout=10, stop_timeout=10).start()
    client = httpx.Client(base_url=f"http://{LOOPBACK}:{settings.http.port}", timeout=10)
    try:
        yield Api(server, client, ledger)
    finally:
        client.close()
        server.stop()
        ledger.dispose()


def send_chunked(port: int, method: str, path: str, total: int, headers: dict[str, str] | None = None) -> int | None:
    """Send ``method path`` with a chunked body of ``total`` bytes, stopping early once the server answers; its status."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items()) + "\r\n"
    chunk = b"z" * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(head.encode())
        sent = 0
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(frame)
                sent += len(chunk)
            if sent >= total:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection after answering
        answer = bytearray()
        try:
            while b"\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer.extend(data)
        except OSError:
            pass
    status_line = bytes(answer).split(b"\r\n", 1)[0].split()
    return int(status_line[1]) if len(status_line) >= 2 else None


def _too_large_audits(ledger: Ledger) -> list[Any]:
    return [r for r in audited(ledger, AuditEvent.SECURITY_ALERT) if '"request-too-large"' in r.detail]


def test_chunked_64_mib_get_is_refused_413_and_audited(api: Api) -> None:
    """GET /studies/{uid} streaming a 64 MiB chunked body is answered 413 (not 200), audited as request-too-large."""
    study = new_study_uid()
    seed(api.ledger, study, 2)
    status = send_chunked(api.server.port, "GET", f"/studies/{study}", BIG, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 413
    wait_until(lambda: _too_large_audits(api.ledger), 10, message="request-too-large not audited")
    assert api.client.get("/healthz").status_code == 200


def test_chunked_64_mib_authorised_delete_is_refused_and_not_carried_out(api: Api) -> None:
    """An authorised DELETE of a deletable study streaming 64 MiB chunked is 413: no delete is requested or decided."""
    study = new_study_uid()
    seed(api.ledger, study, 2, InstanceState.CONFIRMED)
    status = send_chunked(api.server.port, "DELETE", f"/studies/{study}", BIG, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 413
    wait_until(lambda: _too_large_audits(api.ledger), 10, message="request-too-large not audited")
    for event in (AuditEvent.DELETE_REQUESTED, AuditEvent.DELETE_PERMITTED, AuditEvent.DELETE_REFUSED):
        assert audited(api.ledger, event, study) == []
    # The same delete without the body is permitted: the refusal was the body, not the study.
    assert api.delete(study).status_code == 200


def test_chunked_body_within_the_limit_is_served(api: Api) -> None:
    """A chunked body of MAX_BODY bytes is read and ignored: GET /studies/{uid} answers 200."""
    study = new_study_uid()
    seed(api.ledger, study, 1)
    status = send_chunked(api.server.port, "GET", f"/studies/{study}", MAX_BODY, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200


def test_a_body_announced_and_never_sent_is_answered_408(api: Api) -> None:
    """A request announcing a 10-byte body and sending none is answered 408 after BODY_TIMEOUT, not held open for ever."""
    study = new_study_uid()
    seed(api.ledger, study, 1)
    head = f"GET /studies/{study} HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Length: 10\r\n\r\n"
    with socket.create_connection((LOOPBACK, api.server.port), timeout=BODY_TIMEOUT + 10) as sock:
        started = time.monotonic()
        sock.sendall(head.encode())
        answer = sock.recv(4096)
    assert answer.split(b"\r\n", 1)[0].split()[1] == b"408"
    assert BODY_TIMEOUT - 1 <= time.monotonic() - started < BODY_TIMEOUT + 10
