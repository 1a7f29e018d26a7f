"""The spool sweep against a real ledger (SQLite and PostgreSQL) and real files: it removes only what no row names."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pydicom import dcmread

from guard.config.settings import Settings
from guard.ledger.audit_query import query_audit
from guard.ledger.instances import ReceivedInstance, record_received
from guard.ledger.ledger import Ledger
from guard.ledger.spool_files import has_instances, named_spool_paths
from guard.services.sweep import SpoolSweep
from guard.spool import Spool
from tests.support.datasets import make_study
from tests.support.mounts import remount, tmpfs


def _place(spool: Spool, source: Path) -> tuple[str, str]:
    """Place a copy of ``source`` in the spool as ingest does; its study UID and relative path."""
    ds = dcmread(source, stop_before_pixels=True)
    temp = spool.incoming / f"tmp-{ds.SOPInstanceUID}.dcm"
    shutil.copyfile(source, temp)
    stored = spool.place(temp, str(ds.StudyInstanceUID), str(ds.SOPInstanceUID))
    return str(ds.StudyInstanceUID), stored.relative_path


def _record(ledger: Ledger, source: Path, relative: str) -> None:
    ds = dcmread(source, stop_before_pixels=True)
    with ledger.transaction() as tx:
        record_received(
            tx,
            ReceivedInstance(
                sop_instance_uid=str(ds.SOPInstanceUID),
                study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax="1.2.840.10008.1.2.1",
                size=source.stat().st_size,
                sha256=relative.rsplit("-", 1)[1].removesuffix(".dcm"),
                spool_path=relative,
                patient_id="PAT001",
                modality="CT",
                calling_ae="PACS",
                peer_address="127.0.0.1",
            ),
        )


def test_the_sweep_removes_the_unnamed_file_and_keeps_the_named_one(ledger: Ledger, tmp_path: Path) -> None:
    """Two files placed, one recorded: once quiet, the sweep removes the other (an orphan) and keeps the recorded one."""
    study = make_study(tmp_path / "study", 2)
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    study_uid, kept = _place(spool, study.paths[0])
    _, orphan = _place(spool, study.paths[1])
    assert not has_instances(ledger)
    _record(ledger, study.paths[0], kept)
    assert has_instances(ledger)
    assert named_spool_paths(ledger, study_uid) == {kept}
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path), "network_timeout": 2}})
    now = time.time()
    recent = SpoolSweep(settings, ledger, spool, clock=lambda: now).run_once(at_start=True)
    assert recent.removed == []  # both were written just now: not yet quiet
    result = SpoolSweep(settings, ledger, spool, clock=lambda: now + 60).run_once(at_start=True)
    assert [e.relative_path for e in result.orphans] == [orphan]
    assert (spool.root / kept).exists()
    assert not (spool.root / orphan).exists()


def test_a_file_placed_again_since_it_was_listed_is_not_removed(tmp_path: Path) -> None:
    """An orphan listed, then the same instance placed again under its name (the sender re-sent it): the listed entry removes nothing."""
    study = make_study(tmp_path / "study", 1)
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    _, relative = _place(spool, study.paths[0])
    (listed,) = list(spool.stored_files())
    _, again = _place(spool, study.paths[0])
    assert again == relative
    assert spool.remove_if_unchanged(listed) is False
    assert (spool.root / relative).exists()
    (fresh,) = list(spool.stored_files())
    assert spool.remove_if_unchanged(fresh) is True
    assert not (spool.root / relative).exists()


def test_a_read_only_spool_keeps_the_orphan_reports_it_and_removes_it_once_writable(ledger: Ledger, tmp_path: Path) -> None:
    """Spool remounted read-only (a real tmpfs): the start round removes nothing and audits spool-sweep-failed.

    Writable again, the next round removes the orphan (it was kept to be judged again).
    """
    study = make_study(tmp_path / "study", 2)
    with tmpfs(tmp_path / "fs") as fs:
        spool = Spool(fs / "spool")
        spool.prepare()
        _, kept = _place(spool, study.paths[0])
        _, orphan = _place(spool, study.paths[1])
        _record(ledger, study.paths[0], kept)
        settings = Settings.model_validate({"node": {"data_dir": str(tmp_path), "network_timeout": 30}})
        later = time.time() + 600
        sweep = SpoolSweep(settings, ledger, spool, clock=lambda: later)
        remount(fs, "ro")
        sweep.start()  # the start round; the next periodic one is 30 s away
        sweep.stop()
        assert (spool.root / orphan).exists()
        alerts = [r.detail for r in query_audit(ledger, event="security.alert")]
        assert [(a["alert"], a["error"].split(":")[0]) for a in alerts] == [("spool-sweep-failed", "TransientSpoolError")]
        remount(fs, "rw")
        result = sweep.run_once()
        assert result.failure is None
        assert [e.relative_path for e in result.orphans] == [orphan]
        assert not (spool.root / orphan).exists()
        assert (spool.root / kept).exists()
