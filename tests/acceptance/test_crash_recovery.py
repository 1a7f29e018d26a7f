"""kill -9 in the middle of a send: every acknowledged instance still reaches the archive."""

from __future__ import annotations

import threading

import pytest

from guard.domain import status as st
from tests.acceptance.conftest import GuardFactory
from tests.support.fixtures import StudyFactory
from tests.support.orthanc import Orthanc
from tests.support.scu import send_files, unacknowledged
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.slow]

KILL_POINTS = (40, 130, 220)


def test_sigkill_during_a_300_instance_send_loses_nothing_acknowledged(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory
) -> None:
    """Killed with SIGKILL three times mid-send and restarted: each acked instance is in Orthanc, no claim is stuck."""
    study = synthetic_study(300, rows=32, columns=32)
    guard = guard_factory(archive_port=orthanc_archive.dicom_port).start()
    acked: list[str] = []
    remaining = list(zip(study.sop_instance_uids, study.paths, strict=True))
    for kill_at in (*KILL_POINTS, None):
        lock = threading.Lock()
        killed = threading.Event()

        def on_result(
            sop_uid: str, status: int | None, kill_at: int | None = kill_at, lock: threading.Lock = lock, killed: threading.Event = killed
        ) -> None:
            with lock:
                if status == st.SUCCESS:
                    acked.append(sop_uid)
                if kill_at is not None and len(acked) >= kill_at and not killed.is_set():
                    killed.set()
                    guard.kill()

        results = send_files(guard.port, [p for _, p in remaining], on_result=on_result)
        if kill_at is not None:
            assert killed.is_set(), "the guard was not killed during the send"
            guard.start()
        remaining = unacknowledged(remaining, results)
    assert remaining == []
    assert len(set(acked)) == 300
    wait_until(
        lambda: orthanc_archive.instance_uids_of_study(study.study_uid) >= set(acked),
        120,
        message="acknowledged instances missing from the archive after restarts",
    )
    wait_until(lambda: set(guard.instance_states().values()) == {"forwarded"}, 60, message="some instance stayed claimed or pending")
    assert set(guard.instance_states()) == set(study.sop_instance_uids)
