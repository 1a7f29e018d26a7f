"""One guard for the whole hostile-input suite, with short timeouts, and the containment check after every case.

After each case: the guard answers C-ECHO, no partial file is left in the spool's incoming
folder, the spool and the instances table are as before, and the case's audit record exists.
The session summary prints how many cases ran (``docs/security.md`` reports the catalogue).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from guard.ledger.schema import audit_log
from guard.sandbox.archive import ReferenceArchive
from tests.support import workers
from tests.support.dcmtk import echoscu
from tests.support.fixtures import require_tools
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.ports import free_port
from tests.support.waiting import STARTUP_TIMEOUT, wait_for_port, wait_until

#: Short limits so the suite stays fast; production defaults are in docs/configuration.md.
HOSTILE_NODE = {
    "acse_timeout": 2,
    "network_timeout": 3,
    "dimse_timeout": 5,
    "max_dataset_size": 2 * 1024 * 1024,
    "max_pending_per_address": 4,
}
_ran: list[str] = []


@pytest.fixture(scope="package")
def hostile_guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardProcess]:
    """A real ``guard serve`` with the reference archive, shared by every case."""
    require_tools("storescu", "echoscu")
    workdir = tmp_path_factory.mktemp("hostile")
    archive = ReferenceArchive(workdir / "archive").start()
    guard = GuardProcess(
        workdir / "guard",
        archive_port=archive.port,
        node=HOSTILE_NODE,
        sources=[
            {"ae_title": SOURCE_AE, "host": "127.0.0.1", "port": 104},
            {"ae_title": "STOREONLY", "allowed_addresses": ["127.0.0.1/32"], "services": ["store"], "port": 104},
            # Calls from other loopback addresses, for cases whose audit is throttled per address.
            {"ae_title": "ELSEWHERE", "allowed_addresses": ["127.0.0.0/8"], "port": 104},
        ],
        http={"port": free_port(), "bind": "127.0.0.1"},
    )
    try:
        guard.start()
        wait_for_port("127.0.0.1", guard.config["http"]["port"], STARTUP_TIMEOUT)
        yield guard
    finally:
        guard.stop()
        archive.stop()


def spool_files(guard: GuardProcess) -> set[Path]:
    """Files in the spool proper (not the incoming folder)."""
    spool = guard.data_dir / "spool"
    return {p for p in spool.rglob("*") if p.is_file() and ".incoming" not in p.parts}


def incoming_files(guard: GuardProcess) -> list[Path]:
    """Partial files still in the incoming folder."""
    return [p for p in (guard.data_dir / "spool").rglob("*") if p.is_file() and ".incoming" in p.parts]


def last_seq(guard: GuardProcess) -> int:
    """The newest audit sequence number."""
    with guard.ledger_engine() as engine, engine.connect() as conn:
        return int(conn.execute(select(func.max(audit_log.c.seq))).scalar() or 0)


def audits_since(guard: GuardProcess, seq: int) -> list[dict[str, Any]]:
    """Audit records newer than ``seq``."""
    return [r for r in guard.audit_records() if r["seq"] > seq]


@pytest.fixture
def contained(hostile_guard: GuardProcess, request: pytest.FixtureRequest) -> Iterator[int]:
    """Yield the audit position before the case; afterwards check the guard still serves and nothing else changed."""
    states = hostile_guard.instance_states()
    spool = spool_files(hostile_guard)
    seq = last_seq(hostile_guard)
    acceptor = hostile_guard.acceptor_pid()  # the listener process by default: it must survive the case, not be restarted
    yield seq
    echo = echoscu("127.0.0.1", hostile_guard.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE, timeout=10)
    assert echo.returncode == 0, f"no C-ECHO after {request.node.name}:\n{echo.stdout}{echo.stderr}\n{hostile_guard.log_tail()}"
    wait_until(lambda: not incoming_files(hostile_guard), 10, message=f"partial files left: {incoming_files(hostile_guard)}")
    assert hostile_guard.proc is not None
    assert hostile_guard.proc.poll() is None, "the guard died"
    assert hostile_guard.acceptor_pid() == acceptor, "the process that accepts associations died and was restarted"
    assert spool_files(hostile_guard) == spool
    assert hostile_guard.instance_states() == states
    _ran.append(request.node.name)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands its count to the controller, which prints the line (tests/conftest.py)."""
    if workers.is_worker(session.config):
        session.config.workeroutput[workers.HOSTILE_CASES] = len(_ran)  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many hostile cases ran, each followed by a successful C-ECHO."""
    if _ran:
        terminalreporter.write_line(workers.hostile_summary(len(_ran)))
