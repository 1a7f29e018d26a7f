"""Port probes and connection bursts at the DICOM listener: nobody is locked out, nothing is refused for want of a backlog."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from guard.sandbox.archive import ReferenceArchive
from tests.acceptance.conftest import GuardFactory
from tests.support.dcmtk import echoscu
from tests.support.fixtures import require_tools
from tests.support.guard import GUARD_AE, SOURCE_AE
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop


def _probe(port: int) -> None:
    """Connect and close at once, as a health check or a port scan does."""
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_port_probes_do_not_lock_their_source_out(guard_factory: GuardFactory, ref_archive: ReferenceArchive) -> None:
    """Four connect-and-close probes from the source's address (its pending cap), then its next association is accepted at once.

    No probe is audited (neither as no-association-request nor as a refusal).
    """
    require_tools("echoscu")
    guard = guard_factory(archive_port=ref_archive.port, node={"acse_timeout": 30, "max_pending_per_address": 4}).start()
    for _ in range(4):
        _probe(guard.port)
    started = time.monotonic()
    echo = echoscu("127.0.0.1", guard.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE, timeout=10)
    assert echo.returncode == 0, f"the source was locked out after four probes:\n{echo.stdout}{echo.stderr}"
    assert time.monotonic() - started < 5
    refused = [r["detail"].get("reason") for r in guard.audit_records("association.rejected")]
    assert refused == []


def _listener_queue(port: int) -> tuple[int, int]:
    """The socket listening on ``port`` as the kernel reports it (``ss``): connections waiting to be accepted, and the backlog."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10, check=True).stdout
    fields = out.split()
    return int(fields[1]), int(fields[2])


def test_the_accept_backlog_is_128_by_default(guard_factory: GuardFactory, ref_archive: ReferenceArchive) -> None:
    """Without node.accept_backlog the DICOM listener's socket listens with a backlog of 128 (socketserver's own is 5)."""
    require_tools("ss")
    guard = guard_factory(archive_port=ref_archive.port).start()
    assert _listener_queue(guard.port)[1] == 128


def test_connections_queue_up_to_the_configured_accept_backlog(guard_factory: GuardFactory, ref_archive: ReferenceArchive) -> None:
    """With node.accept_backlog = 24 and the acceptor stopped (SIGSTOP), 40 connections at once: the kernel queues 24; then it serves."""
    require_tools("echoscu")
    require_tools("ss")
    backlog = 24
    node = {"accept_backlog": backlog, "max_pending": 200, "max_pending_per_address": 200, "acse_timeout": 5}
    guard = guard_factory(archive_port=ref_archive.port, node=node).start()
    assert _listener_queue(guard.port)[1] == backlog
    pid = guard.acceptor_pid()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(backlog + 16)]
    os.kill(pid, signal.SIGSTOP)  # nothing accepts while the process is stopped: only the kernel's queue holds connections
    try:
        for sock in socks:
            sock.setblocking(False)  # noqa: FBT003 - the socket API
            sock.connect_ex(("127.0.0.1", guard.port))
        # Linux queues backlog + 1 connections; socketserver's backlog of 5 would stop at 6.
        wait_until(lambda: _listener_queue(guard.port)[0] >= backlog, 10, message=f"fewer than {backlog} connections queued")
        assert _listener_queue(guard.port)[0] <= backlog + 1
    finally:
        os.kill(pid, signal.SIGCONT)
        for sock in socks:
            sock.close()
    echo = echoscu("127.0.0.1", guard.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE, timeout=30)
    assert echo.returncode == 0, f"{echo.stdout}{echo.stderr}"
