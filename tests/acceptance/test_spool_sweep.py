"""What a crash leaves in the spool is removed once it is nobody's; what the ledger names, or a receive holds, never is.

Real ``guard serve`` processes: killed with SIGKILL in the middle of a receive, and started on
a spool holding files placed as a crash leaves them. ``node.network_timeout`` is 2 s, so a file
is the sweep's after 4 quiet seconds and the sweep goes round every 2 s.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from guard.domain import status as st
from guard.domain.digest import dataset_offset
from guard.ledger.schema import instances
from guard.sandbox.archive import ReferenceArchive
from tests.acceptance.conftest import GuardFactory
from tests.hostile.peer import CT_STORAGE, EXPLICIT_LE, RawPeer, command, p_data, status_of
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.scu import send_files
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.interop, pytest.mark.slow]

NODE = {"network_timeout": 2, "acse_timeout": 5, "dimse_timeout": 10}
ALERT = "spool-leftovers-removed"
A_ASSOCIATE_AC = 0x02


def _spool(guard: GuardProcess) -> Path:
    return guard.data_dir / "spool"


def _incoming(guard: GuardProcess) -> list[Path]:
    folder = _spool(guard) / ".incoming"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _stored(guard: GuardProcess) -> set[str]:
    """Relative paths of the files in the spool's study folders."""
    spool = _spool(guard)
    return {p.relative_to(spool).as_posix() for p in spool.glob("*/*") if p.is_file() and not p.parent.name.startswith(".")}


def _named(guard: GuardProcess) -> set[str]:
    """Spool paths the ledger's rows name."""
    with guard.ledger_engine() as engine, engine.connect() as conn:
        return {str(p) for p in conn.execute(select(instances.c.spool_path)).scalars() if p is not None}


def _removed(guard: GuardProcess) -> list[str]:
    """Every path the sweep reported removing."""
    return [p for r in guard.audit_records("security.alert") if r["detail"].get("alert") == ALERT for p in r["detail"]["paths"]]


def _kill_during_a_receive(guard: GuardProcess, paths: list[Path]) -> tuple[list[tuple[str, int | None]], set[str]]:
    """Send ``paths`` and SIGKILL the guard as soon as a data set is being written; the statuses, and the incoming files left."""
    results: list[tuple[str, int | None]] = []
    # The process that receives, found before the send: at the first file it is killed at once,
    # before the receive can finish (finding it then, in /proc, could take longer than a receive).
    receiver = guard.listener_pid()
    sender = threading.Thread(target=lambda: results.extend(send_files(guard.port, paths)))
    sender.start()
    wait_until(lambda: _incoming(guard) or not sender.is_alive(), 60, interval=0.01, message="no receive started")
    os.kill(receiver, signal.SIGKILL)
    guard.kill()
    left = {p.name for p in _incoming(guard)}
    sender.join(60)
    return results, left


def test_sigkill_in_the_middle_of_receives_leaves_nothing_behind(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """SIGKILL while a data set is being written, three times: after restarts each leftover is removed and audited, acked ones kept."""
    study = synthetic_study(40, rows=512, columns=512)
    guard = guard_factory(archive_port=ref_archive.port, node=NODE).start()
    remaining = list(zip(study.sop_instance_uids, study.paths, strict=True))
    acked: set[str] = set()
    left_by_kills: set[str] = set()
    for _ in range(3):
        results, left = _kill_during_a_receive(guard, [p for _, p in remaining])
        left_by_kills |= left
        acked |= {uid for uid, status in results if status == st.SUCCESS}
        remaining = [(uid, p) for uid, p in remaining if uid not in acked]
        guard.start()
    assert left_by_kills, "no kill landed during a receive: the case did not happen"
    done = send_files(guard.port, [p for _, p in remaining])
    acked |= {uid for uid, status in done if status == st.SUCCESS}
    assert acked == set(study.sop_instance_uids)
    wait_until(lambda: not _incoming(guard), 30, message=f"partial files left: {_incoming(guard)}")
    wait_until(lambda: _stored(guard) <= _named(guard), 30, message=f"orphans left: {_stored(guard) - _named(guard)}")
    assert _named(guard) <= _stored(guard), "a file the ledger names was removed"
    assert set(guard.instance_states()) == set(study.sop_instance_uids)
    removed = {Path(p).name for p in _removed(guard)}
    assert left_by_kills <= removed, "a partial file a kill left was not audited"


def test_files_left_as_a_crash_leaves_them_are_removed_and_the_rest_kept(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """At start: a partial incoming file and complete files no row names are removed once quiet, audited; named and foreign files stay."""
    study = synthetic_study(3)
    guard = guard_factory(archive_port=ref_archive.port, node=NODE).start()
    assert {s for _, s in send_files(guard.port, study.paths)} == {st.SUCCESS}
    named = _named(guard)
    guard.kill()
    spool = _spool(guard)
    partial = spool / ".incoming" / "tmpcrashed.dcm"
    partial.write_bytes(study.paths[0].read_bytes()[:3000])
    digest = hashlib.sha256(b"never committed").hexdigest()
    orphan = f"{study.study_uid}/1.2.826.0.1.3680043.10.1077.99-{digest}.dcm"  # in a study the ledger knows
    lone = f"1.2.826.0.1.3680043.10.1077.98/1.2.826.0.1.3680043.10.1077.98.1-{digest}.dcm"  # in a study it does not
    for relative in (orphan, lone):
        (spool / relative).parent.mkdir(exist_ok=True)
        shutil.copyfile(study.paths[1], spool / relative)
    foreign = spool / study.study_uid / "notes.txt"  # not named as the spool names its files: not the guard's
    foreign.write_text("an administrator's note")
    guard.start()
    leftovers = {".incoming/tmpcrashed.dcm", orphan, lone}
    # The removal is audited just after the files go: wait for both.
    wait_until(lambda: not any((spool / p).exists() for p in leftovers) and set(_removed(guard)) >= leftovers, 30, message="leftovers kept")
    assert _stored(guard) == named | {f"{study.study_uid}/notes.txt"}
    assert foreign.exists()
    for relative in named:
        assert dcmread(spool / relative).SOPInstanceUID in study.sop_instance_uids
    # The sweep records what it removed once the files are gone: under load the record can come a moment later.
    wait_until(lambda: set(_removed(guard)) == leftovers, 30, message=f"removals not audited: {_removed(guard)}")
    alerts = [r for r in guard.audit_records("security.alert") if r["detail"].get("alert") == ALERT]
    assert sum(a["detail"]["partial_files"] for a in alerts) == 1
    assert sum(a["detail"]["orphan_files"] for a in alerts) == 2


def test_a_slow_receive_survives_the_sweep_and_is_stored(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """A data set trickling in over several sweep rounds (10 s, the sweep every 2 s) keeps its incoming file: acked 0x0000, stored whole."""
    study = synthetic_study(1)
    guard = guard_factory(archive_port=ref_archive.port, node=NODE).start()
    raw = study.paths[0].read_bytes()
    data = raw[dataset_offset(raw[:4096]) :]
    sop = study.sop_instance_uids[0]
    peer = RawPeer(guard.port, timeout=30)
    try:
        assert peer.associate(SOURCE_AE, GUARD_AE, [(CT_STORAGE, [EXPLICIT_LE])]).pdu_type == A_ASSOCIATE_AC
        peer.send(p_data(1, 0x03, command(0x0001, sop_class=CT_STORAGE, sop_instance=sop, has_dataset=True)))
        pieces = [data[i : i + len(data) // 20 + 1] for i in range(0, len(data), len(data) // 20 + 1)]
        started = time.monotonic()
        for piece in pieces[:-1]:
            peer.send(p_data(1, 0x00, piece))
            deadline = time.monotonic() + 0.5  # well inside network_timeout, so the association lives
            wait_until(lambda d=deadline: time.monotonic() >= d, 1, interval=0.05)
            assert len(_incoming(guard)) == 1, "the file of a receive in progress was removed"
        assert time.monotonic() - started > 2 * NODE["network_timeout"] + NODE["network_timeout"]
        peer.send(p_data(1, 0x02, pieces[-1]))
        answer = peer.receive(timeout=30)
        assert status_of(answer.body) == st.SUCCESS
    finally:
        peer.close()
    assert guard.instance_states() == {sop: guard.instance_states()[sop]}
    (stored,) = _stored(guard)
    assert dcmread(_spool(guard) / stored).SOPInstanceUID == sop


@pytest.mark.parametrize("case", ["new-ledger", "more-than-a-crash-leaves"])
def test_a_ledger_that_is_not_the_spools_removes_nothing(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, case: str
) -> None:
    """Unnamed study files next to an empty ledger, or more than a crash can leave (2 x max_associations), are all kept and alerted."""
    study = synthetic_study(3)
    guard = guard_factory(archive_port=ref_archive.port, node={**NODE, "max_associations": 1})
    spool = _spool(guard)
    if case == "more-than-a-crash-leaves":
        guard.start()
        assert {s for _, s in send_files(guard.port, study.paths[:1])} == {st.SUCCESS}
        guard.kill()
    unknown = set()
    for index, path in enumerate(study.paths):  # as if the ledger that named them had been lost
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        relative = f"{study.study_uid}/1.2.826.0.1.3680043.10.1077.{200 + index}-{digest}.dcm"
        (spool / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, spool / relative)
        unknown.add(relative)
    guard.start()
    alerts = wait_until(
        lambda: [r for r in guard.audit_records("security.alert") if r["detail"].get("alert") == "spool-unknown-files"],
        30,
        message="no spool-unknown-files alert",
    )
    expected = "ledger-without-instances" if case == "new-ledger" else "more-than-a-crash-leaves"
    assert [a["detail"]["reason"] for a in alerts] == [expected]
    assert set(alerts[0]["detail"]["paths"]) == unknown
    assert unknown <= _stored(guard)
    assert _removed(guard) == []
