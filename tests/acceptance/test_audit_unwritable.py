"""A refusal the ledger cannot record: the sender still gets the refusal's own status, and the log keeps the record.

The ledger (SQLite) lives on a small tmpfs that the test fills; the spool is elsewhere, so
only the audit write fails. The guard's JSON log is parsed line by line (structlog's
``capture_logs`` is not thread-safe, and the guard is another process anyway).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard.domain import status as st
from guard.sandbox.archive import ReferenceArchive
from tests.acceptance.conftest import GuardFactory
from tests.support.availability import unavailable
from tests.support.datasets import make_instance
from tests.support.scu import send_files
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop


@pytest.fixture
def ledger_mount(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs for the ledger alone (needs root, as in CI); unmounted at the end."""
    mount_point = tmp_path / "ledger-fs"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        unavailable("mount(8) not available")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(folder: Path) -> None:
    """Write zeros (unbuffered) until the file system has no block left."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)


def test_refusal_is_answered_and_logged_when_the_ledger_is_full(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, ledger_mount: Path, tmp_path: Path
) -> None:
    """Ledger disk full: an instance with a hostile UID still gets 0xC000 (not 0xA700), and an audit.unwritable JSON line records it."""
    guard = guard_factory(archive_port=ref_archive.port, ledger_url=f"sqlite:///{ledger_mount / 'ledger.sqlite'}").start()
    bad = make_instance(tmp_path / "bad" / "bad.dcm", study_uid="1.2.3", series_uid="1.2.3.1", sop_instance_uid="1.2.abc.4")
    _fill(ledger_mount)
    try:
        answers = send_files(guard.port, [bad])
        assert [status for _, status in answers] == [st.CANNOT_UNDERSTAND]

        def unwritable() -> list[dict[str, object]]:
            return [r for r in guard.log_records() if r.get("event") == "audit.unwritable"]

        (line,) = wait_until(unwritable, 10, message=f"no audit.unwritable line:\n{guard.log_tail()}")
        assert line["audit_event"] == "security.alert"
        assert line["outcome"] == "failure"
        assert line["reason"] == "invalid-uid"
        assert line["actor"] == "STORESCU"
        assert line["audit"] is False
        assert "full" in str(line["error"]).lower()
        assert line["level"] == "error"
    finally:
        (ledger_mount / "filler").unlink(missing_ok=True)
