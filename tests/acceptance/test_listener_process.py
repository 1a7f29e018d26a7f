"""The DICOM listener in its own process (``node.listener_process``): SIGKILL of each guard process in turn.

A real ``guard serve`` with a real Orthanc archive; 300 instances sent with pynetdicom as the
PACS; the listener process killed with SIGKILL mid-send, then the main process. Nothing
acknowledged is lost, the killed process comes back, and ``/readyz`` says "not ready" while it
is down.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from guard.domain import status as st
from guard.ledger.schema import instances
from guard.listener.server import DRAIN_TIMEOUT
from guard.sandbox.archive import ReferenceArchive
from tests.acceptance.conftest import GuardFactory
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port
from tests.support.scu import send_files, unacknowledged
from tests.support.waiting import port_is_open, wait_until

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def _ready(guard: GuardProcess) -> int:
    return httpx.get(f"http://127.0.0.1:{guard.config['http']['port']}/readyz", timeout=10).status_code


def _is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_of_each_guard_process_in_turn_loses_nothing_acknowledged(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Listener killed at 100 acks, main process at 200: every ack is in Orthanc, both come back, readiness says not ready meanwhile."""
    study = synthetic_study(300, rows=32, columns=32)
    guard = guard_factory(
        archive_port=orthanc_archive.dicom_port,
        node={"listener_process": True},
        http={"port": free_port(), "bind": "127.0.0.1"},
        fresh=True,  # the processes' life cycle is the point: the main process as an administrator starts it
    ).start(timeout=90)
    wait_until(lambda: _ready(guard) == 200, 60, message="the guard never became ready")
    first_listener = guard.listener_pid()
    acked: list[str] = []
    lock = threading.Lock()
    seen_not_ready: list[int] = []
    killed: dict[str, int] = {}

    def on_result(sop_uid: str, status: int | None) -> None:
        with lock:
            if status == st.SUCCESS:
                acked.append(sop_uid)
            if len(acked) >= 100 and "listener" not in killed:
                killed["listener"] = first_listener
                os.kill(first_listener, signal.SIGKILL)
                # Heartbeats stop and the process is reaped at once: readiness must say so.
                wait_until(lambda: _ready(guard) == 503, 10, message="/readyz stayed ready with the listener down")
                seen_not_ready.append(503)

    remaining = list(zip(study.sop_instance_uids, study.paths, strict=True))
    results = send_files(guard.port, [p for _, p in remaining], on_result=on_result)
    assert killed.get("listener") == first_listener, "the listener was not killed during the send"
    assert seen_not_ready == [503]
    wait_until(lambda: _ready(guard) == 200, 90, message=f"the listener did not come back:\n{guard.log_tail()}")
    second_listener = guard.listener_pid()
    assert second_listener != first_listener
    remaining = unacknowledged(remaining, results)

    def kill_main(sop_uid: str, status: int | None) -> None:
        with lock:
            if status == st.SUCCESS:
                acked.append(sop_uid)
            if len(acked) >= 200 and "main" not in killed:
                killed["main"] = guard.proc.pid if guard.proc is not None else -1
                guard.kill_main()

    results = send_files(guard.port, [p for _, p in remaining], on_result=kill_main)
    assert "main" in killed, "the main process was not killed during the send"
    # The listener must not outlive its main process: it would accept instances nobody forwards. It
    # stops accepting at once and lets the association in flight finish (bounded by the drain time).
    wait_until(lambda: not _is_running(second_listener), DRAIN_TIMEOUT + 30, message="the listener process outlived the main process")
    wait_until(lambda: not port_is_open("127.0.0.1", guard.port), 30, message="the DICOM port stayed open without a guard")
    remaining = unacknowledged(remaining, results)
    guard.start(timeout=90)
    deadline = time.monotonic() + 300
    while remaining and time.monotonic() < deadline:
        results = send_files(guard.port, [p for _, p in remaining], on_result=lambda uid, s: acked.append(uid) if s == st.SUCCESS else None)
        remaining = unacknowledged(remaining, results)
    assert remaining == []
    assert len(set(acked)) == 300
    wait_until(
        lambda: orthanc_archive.instance_uids_of_study(study.study_uid) >= set(acked),
        180,
        message="acknowledged instances missing from the archive after the kills",
    )
    wait_until(
        lambda: set(guard.instance_states().values()) <= {"forwarded", "confirmed"}, 120, message="an instance stayed claimed or pending"
    )
    exits = [r for r in guard.audit_records("security.alert") if r.get("detail", {}).get("alert") == "listener-process-exited"]
    assert [first_listener] == [r["detail"]["pid"] for r in exits]
    assert exits[0]["detail"]["returncode"] == -signal.SIGKILL


def test_archive_reports_reach_metrics_and_sigterm_stops_the_listener_process(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Reports the listener process receives show in the main process's /metrics; SIGTERM then stops both, exit 0, audited."""
    guard = guard_factory(
        archive_port=orthanc_archive.dicom_port,
        node={"listener_process": True},
        http={"port": free_port(), "bind": "127.0.0.1"},
        fresh=True,  # the processes' life cycle is the point: the main process as an administrator starts it
    )
    orthanc_archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    guard.start(timeout=90)
    listener = guard.listener_pid()
    study = synthetic_study(3, rows=16, columns=16)
    assert [status for _, status in send_files(guard.port, study.paths)] == [st.SUCCESS] * 3
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="the study was not confirmed")

    def latency_count() -> float:
        text = httpx.get(f"http://127.0.0.1:{guard.config['http']['port']}/metrics", timeout=10).text
        line = next((ln for ln in text.splitlines() if ln.startswith("guard_commitment_latency_seconds_count")), "x 0")
        return float(line.split()[-1])

    # The archive's N-EVENT-REPORT arrived at the listener process; its latency is counted where /metrics is served.
    assert latency_count() >= 1
    assert guard.terminate() == 0
    wait_until(lambda: not _is_running(listener), 30, message="the listener process outlived SIGTERM of the guard")
    assert guard.audit_records("service.stopped")


def test_the_listener_process_loads_only_what_receiving_needs(guard_factory: GuardFactory, orthanc_archive: Orthanc) -> None:
    """With verify.compare = content the main process maps numpy (pydicom decodes pixel data with it); the listener never does."""
    guard = guard_factory(
        archive_port=orthanc_archive.dicom_port, node={"listener_process": True}, verify={"compare": "content"}, fresh=True
    ).start(timeout=90)
    listener = guard.listener_pid()
    main = guard.proc.pid if guard.proc is not None else -1
    wait_until(lambda: port_is_open("127.0.0.1", guard.port), 60, message="the listener never listened")
    assert "numpy" in Path(f"/proc/{main}/maps").read_text(), "the test needs numpy installed and loaded by the main process"
    assert "numpy" not in Path(f"/proc/{listener}/maps").read_text()
    assert Path(f"/proc/{listener}/cmdline").read_bytes().split(b"\0")[1:4] == [b"-m", b"guard", b"listener"]


def test_a_guard_serve_that_compares_exactly_keeps_numpy_out_and_still_forwards_and_confirms(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """``guard serve`` in one process with the default exact comparison never maps numpy (``guard.app.imports``), and does its work.

    The whole node runs without it: receiving, forwarding, Storage Commitment and the admin API.
    """
    guard = guard_factory(
        archive_port=orthanc_archive.dicom_port,
        node={"listener_process": False},
        http={"port": free_port(), "bind": "127.0.0.1"},
        fresh=True,
    )
    orthanc_archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    guard.start(timeout=90)
    study = synthetic_study(3, rows=16, columns=16)
    assert [status for _, status in send_files(guard.port, study.paths)] == [st.SUCCESS] * 3
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="the study was not confirmed")
    main = guard.proc.pid if guard.proc is not None else -1
    assert Path(f"/proc/{main}/cmdline").read_bytes().split(b"\0")[1:4] == [b"-m", b"guard", b"serve"]
    assert "numpy" not in Path(f"/proc/{main}/maps").read_text()
    assert _ready(guard) == 200
    assert guard.terminate() == 0


def test_what_the_listener_process_receives_is_held_by_its_node(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """Receipts and their audit records written by the listener process name ``node.id``, as the main process's do.

    With a node-local spool another node must never claim an instance whose file it does not hold.
    """
    guard = guard_factory(archive_port=ref_archive.port, node={"listener_process": True, "id": "node-x"}).start()
    study = synthetic_study(2, rows=16, columns=16)
    assert [status for _, status in send_files(guard.port, study.paths)] == [st.SUCCESS] * 2
    with guard.ledger_engine() as engine, engine.connect() as conn:
        held = set(conn.execute(select(instances.c.node)).scalars())
    assert held == {"node-x"}
    assert {r["node"] for r in guard.audit_records("instance.received")} == {"node-x"}
