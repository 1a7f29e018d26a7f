"""``GET /readyz`` of a running guard fails when the ledger or the spool becomes unusable or the workers stop, and recovers.

The guard runs in the test process (``GuardService``: real worker threads, real uvicorn, and its
real listener in a process of its own, as by default, so readiness also reports ``listener``)
so that its parts can be broken from outside as they break in production: the
PostgreSQL database refusing connections, the spool's file system remounted read-only, the
worker threads no longer running.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from guard.app.service import GuardService
from guard.config.settings import Settings
from tests.support.availability import unavailable
from tests.support.ports import free_port
from tests.support.postgres import scratch_database
from tests.support.waiting import wait_until


def _settings(data_dir: Path, ledger_url: str = "") -> Settings:
    return Settings.model_validate(
        {
            "node": {"bind": "127.0.0.1", "port": free_port(), "data_dir": str(data_dir)},
            "ledger": {"url": ledger_url},
            "archive": {"port": free_port(), "probe_interval": 0},
            "http": {"bind": "127.0.0.1", "port": free_port()},
        }
    )


@pytest.fixture
def run_guard() -> Iterator[Any]:
    """Start ``GuardService`` instances; every one is stopped at teardown."""
    started: list[GuardService] = []

    def start(settings: Settings) -> tuple[GuardService, str]:
        service = GuardService(settings)
        started.append(service)
        service.start()
        return service, f"http://127.0.0.1:{settings.http.port}"

    yield start
    for service in started:
        service.stop()


def _ready(base: str) -> tuple[int, dict[str, bool]]:
    answer = httpx.get(base + "/readyz", timeout=30)
    return answer.status_code, answer.json()["checks"]


@pytest.fixture
def own_postgres_db() -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """A database of this test's own (it is made to refuse connections), dropped afterwards."""
    with scratch_database("guard_ready") as (url, admin):
        try:
            yield url, admin
        finally:
            admin.execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" ALLOW_CONNECTIONS true')


@pytest.mark.postgres
def test_readyz_fails_while_the_ledger_database_refuses_connections_and_recovers(
    own_postgres_db: tuple[str, psycopg.Connection[Any]], run_guard: Any, tmp_path: Path
) -> None:
    """PostgreSQL stops accepting the guard (connections cut, new ones refused): 503 with ledger false; 200 again once it accepts."""
    url, admin = own_postgres_db
    name = url.rsplit("/", 1)[1]
    _service, base = run_guard(_settings(tmp_path / "data", url))
    assert _ready(base) == (200, {"ledger": True, "spool": True, "workers": True, "accepting": True, "listener": True})
    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    status, checks = _ready(base)
    assert status == 503
    assert checks["ledger"] is False
    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    wait_until(lambda: _ready(base)[0] == 200, 30, interval=0.5, message="not ready again after the database came back")


def test_readyz_fails_when_the_spool_file_system_turns_read_only_and_recovers(run_guard: Any, tmp_path: Path) -> None:
    """The data folder's file system remounted read-only: 503 with spool false; remounted read-write: 200."""
    data = tmp_path / "data"
    data.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs (needs root, as in CI): {mounted.stderr.strip()}")
    try:
        settings = _settings(data, f"sqlite:///{tmp_path / 'ledger.sqlite'}")  # the ledger elsewhere: only the spool breaks
        _service, base = run_guard(settings)
        assert _ready(base) == (200, {"ledger": True, "spool": True, "workers": True, "accepting": True, "listener": True})
        subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
        status, checks = _ready(base)
        assert (status, checks["spool"], checks["ledger"]) == (503, False, True)
        subprocess.run(["mount", "-o", "remount,rw", str(data)], check=True)
        assert _ready(base)[0] == 200
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_readyz_fails_when_worker_threads_are_no_longer_running(run_guard: Any, tmp_path: Path) -> None:
    """The confirmation loop's threads stopped (the forwarder still runs): 503 with workers false, ledger and spool still true."""
    service, base = run_guard(_settings(tmp_path / "data"))
    assert _ready(base)[0] == 200
    assert service.confirmer is not None
    service.confirmer.stop()
    assert not service.confirmer.alive()
    assert _ready(base) == (503, {"ledger": True, "spool": True, "workers": False, "accepting": True, "listener": True})
