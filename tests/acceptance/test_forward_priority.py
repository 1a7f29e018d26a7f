"""The forwarding workers run at a lower CPU priority than receiving (``forward.nice``, ADR 0022).

A real ``guard serve`` forwarding to a real Orthanc: the kernel's own view of its threads
(``/proc/<pid>/task/*``) shows the forwarding worker by name, its nice value, the nice value of
the archive association's threads it started, and that every thread of the listener process
(what the PACS waits for) kept the priority it started with.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.domain import status as st
from tests.acceptance.conftest import GuardFactory
from tests.support.fixtures import StudyFactory
from tests.support.guard import GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.scu import send_files
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.interop]


def _threads(pid: int) -> list[tuple[str, int]]:
    """(kernel name, nice value) of each live thread of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended while it was listed
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        # After the name: state is the first field, nice the 17th (proc(5), field 19).
        found.append((name, int(stat[stat.rindex(")") + 2 :].split()[16])))
    return found


def _main_pid(guard: GuardProcess) -> int:
    assert guard.proc is not None
    return guard.proc.pid


def _forward_nice(guard: GuardProcess) -> set[int]:
    return {nice for name, nice in _threads(_main_pid(guard)) if name == "forward-0"}


def test_forwarding_runs_below_receiving(guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory) -> None:
    """Default: forward-0 and the archive association's threads at nice 10; every listener thread at the guard's own priority."""
    guard = guard_factory(archive_port=orthanc_archive.dicom_port)
    del guard.config["forward"]["nice"]  # the guard's own default, not the test support's 0
    guard.start(timeout=60)
    study = synthetic_study(3, rows=16, columns=16)
    assert [s for _uid, s in send_files(guard.port, study.paths)] == [st.SUCCESS] * 3
    wait_until(lambda: orthanc_archive.count_instances() == 3, 60, message="the instances never reached the archive")
    main = _threads(_main_pid(guard))
    base = {nice for name, nice in main if name != "forward-0"}
    assert base == {0}, f"the main process's other threads changed priority: {main}"
    forwarders = [nice for name, nice in main if name == "forward-0"]
    # The worker itself and the threads of its archive association (they inherit its name and priority).
    assert len(forwarders) >= 2, f"no archive association threads under forward-0: {main}"
    assert set(forwarders) == {10}
    listener = _threads(guard.listener_pid())
    assert {nice for _name, nice in listener} == {0}, f"a listener thread runs at a lower priority: {listener}"


@pytest.mark.parametrize(
    ("config", "why"),
    [({"forward": {"nice": 0}}, "forward.nice = 0"), ({"forward": {"nice": 10}, "node": {"listener_process": False}}, "one process")],
)
def test_forwarding_keeps_its_priority(guard_factory: GuardFactory, config: dict[str, dict[str, object]], why: str) -> None:
    """``forward.nice = 0``, or the listener in the same process (the interpreter lock would invert priorities): nice 0."""
    guard = guard_factory(archive_port=1, **config).start(timeout=60)
    wait_until(lambda: bool(_forward_nice(guard)), 30, message="no forward-0 thread")
    assert _forward_nice(guard) == {0}, why
