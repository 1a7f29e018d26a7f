"""``guard serve`` as one of several nodes: SIGTERM drains (not ready first, still serving), an SQLite ledger takes one node."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.dcmtk import echoscu
from tests.support.guard import GUARD_AE, SOURCE_AE
from tests.support.ports import free_port
from tests.support.waiting import STARTUP_TIMEOUT, wait_until

if TYPE_CHECKING:
    from guard.sandbox.archive import ReferenceArchive
    from tests.acceptance.conftest import GuardFactory

pytestmark = pytest.mark.interop

#: Long enough that the checks below run inside the drain on a busy machine; the test waits for nothing fixed.
DRAIN = 15


def _readyz(port: int) -> tuple[int, dict[str, object]]:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    except httpx.HTTPError:
        return 0, {}
    return response.status_code, response.json()


def test_sigterm_makes_the_node_not_ready_first_and_it_still_accepts_associations_while_draining(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive
) -> None:
    """After SIGTERM /readyz answers 503 with accepting false while a C-ECHO is still accepted; then the node exits 0, stopped."""
    http_port = free_port()
    guard = guard_factory(
        archive_port=ref_archive.port,
        node={"id": "node-a", "drain_seconds": DRAIN, "heartbeat_seconds": 0.5},
        http={"bind": "127.0.0.1", "port": http_port},
    ).start()
    assert _readyz(http_port)[0] == 200
    assert guard.proc is not None
    guard.proc.send_signal(signal.SIGTERM)
    status, body = wait_until(lambda: (r := _readyz(http_port))[0] == 503 and r, timeout=STARTUP_TIMEOUT, message="not-ready on SIGTERM")
    assert (status, body["checks"]["accepting"]) == (503, False)  # type: ignore[index]
    assert guard.proc.poll() is None, "the node is still draining"
    echo = echoscu("127.0.0.1", guard.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    assert guard.proc.wait(DRAIN + STARTUP_TIMEOUT) == 0
    guard.proc = None
    [stopped] = guard.audit_records("service.stopped")
    assert stopped["node"] == "node-a"
    with guard.ledger_engine() as engine, engine.connect() as conn:
        from sqlalchemy import text  # noqa: PLC0415 - only this test reads the nodes table

        assert [tuple(r) for r in conn.execute(text("SELECT node, state, ready FROM nodes"))] == [("node-a", "stopped", 0)]


def test_a_second_node_on_an_sqlite_ledger_is_refused_with_a_clear_error(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive
) -> None:
    """Node B pointed at node A's SQLite ledger exits at start naming node A and PostgreSQL; node A keeps serving."""
    first = guard_factory(archive_port=ref_archive.port, name="a", node={"id": "node-a"}).start()
    second = guard_factory(archive_port=ref_archive.port, name="b", node={"id": "node-b"}, ledger_url=first.config["ledger"]["url"])
    with pytest.raises(RuntimeError, match="guard exited with 1") as refused:
        second.start()
    assert "in use by guard node 'node-a'" in str(refused.value)
    assert "PostgreSQL" in str(refused.value)
    assert echoscu("127.0.0.1", first.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE).returncode == 0
