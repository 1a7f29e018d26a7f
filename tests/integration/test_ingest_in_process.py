"""The ingest service in the test process: real spool files, real SQLite and PostgreSQL ledgers.

These drive ``IngestService.store`` as the C-STORE handler does (a temporary file in the
spool's incoming folder, the command's UIDs), without a ``guard serve`` process, so that each
rule of durable ingest is checked where it lives.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from guard.config.settings import Settings
from guard.domain import status as st
from guard.domain.errors import PermanentSpoolError, SpoolError, TransientSpoolError
from guard.ledger.ledger import Ledger
from guard.ledger.schema import audit_log, instances
from guard.runtime import ReceiveError
from guard.services.ingest import IngestService, StoreAnswer, StoreRequest
from guard.spool import Spool
from tests.support.datasets import make_instance
from tests.support.mounts import remount, tmpfs, use_up_inodes

SOURCE = "PACS"


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    """A prepared spool in a temporary folder."""
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    return spool


@pytest.fixture
def received() -> list[int]:
    """Counts the ``on_received`` calls (the forwarder's wake)."""
    return []


@pytest.fixture
def ingest(tmp_path: Path, ledger: Ledger, spool: Spool, received: list[int]) -> IngestService:
    """An ingest service admitting one source, on the ledger fixture's database."""
    settings = Settings(
        node={"data_dir": str(tmp_path)},
        sources=[{"ae_title": SOURCE, "host": "127.0.0.1", "port": 11112}],
    )
    return IngestService(settings, ledger, spool, on_received=lambda: received.append(1))


def _incoming(spool: Spool, source: Path) -> Path:
    """Put a copy of ``source`` where pynetdicom would have streamed it."""
    temp = spool.incoming / f"tmp{generate_uid()[-12:]}.dcm"
    shutil.copyfile(source, temp)
    return temp


def _request(temp: Path, **overrides: Any) -> StoreRequest:
    header = dcmread(temp, stop_before_pixels=True)
    fields: dict[str, Any] = {
        "temp_path": temp,
        "sop_class_uid": str(header.SOPClassUID),
        "sop_instance_uid": str(header.SOPInstanceUID),
        "transfer_syntax": ExplicitVRLittleEndian,
        "calling_ae": SOURCE,
        "peer_address": "127.0.0.1",
    }
    fields.update(overrides)
    return StoreRequest(**fields)


def _rows(ledger: Ledger, sop_uid: str) -> list[Any]:
    with ledger.engine.connect() as conn:
        return list(conn.execute(select(instances).where(instances.c.sop_instance_uid == sop_uid).order_by(instances.c.version)))


def _events(ledger: Ledger, sop_uid: str) -> list[tuple[str, str, dict[str, Any]]]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.seq)).all()
    found = []
    for row in rows:
        detail = json.loads(row.detail) if isinstance(row.detail, str) else row.detail or {}
        if row.sop_instance_uid == sop_uid or detail.get("sop_instance_uid") == sop_uid:
            found.append((row.event, row.outcome, detail))
    return found


def _instance(tmp_path: Path, name: str = "a.dcm", **kwargs: Any) -> tuple[Path, str]:
    sop_uid = kwargs.pop("sop_instance_uid", str(generate_uid()))
    path = make_instance(
        tmp_path / "src" / name,
        study_uid=kwargs.pop("study_uid", str(generate_uid())),
        series_uid=str(generate_uid()),
        sop_instance_uid=sop_uid,
        **kwargs,
    )
    return path, sop_uid


def test_a_stored_instance_is_in_the_spool_and_the_ledger_before_success(
    tmp_path: Path, ingest: IngestService, spool: Spool, ledger: Ledger, received: list[int]
) -> None:
    """Success comes with the file placed in the spool, its digest recorded, the receipt audited and the forwarder woken."""
    source, sop_uid = _instance(tmp_path)
    temp = _incoming(spool, source)
    answer = ingest.store(_request(temp))
    assert (answer.status, answer.comment) == (st.SUCCESS, "")
    [row] = _rows(ledger, sop_uid)
    stored = spool.path_of(row.spool_path)
    assert stored.is_file()
    assert not temp.exists()
    assert row.state == "received"
    assert row.calling_ae == SOURCE
    assert row.size == stored.stat().st_size
    assert len(row.sha256) == 64
    assert [(e, o) for e, o, _ in _events(ledger, sop_uid)] == [("instance.received", "success")]
    assert len(received) == 1


def test_an_identical_resend_is_idempotent(
    tmp_path: Path, ingest: IngestService, spool: Spool, ledger: Ledger, received: list[int]
) -> None:
    """The same instance sent twice is one ledger row, one receipt record, one wake; both answers are Success."""
    source, sop_uid = _instance(tmp_path)
    first = ingest.store(_request(_incoming(spool, source)))
    second = ingest.store(_request(_incoming(spool, source)))
    assert (first.status, second.status) == (st.SUCCESS, st.SUCCESS)
    assert len(_rows(ledger, sop_uid)) == 1
    assert len(_events(ledger, sop_uid)) == 1
    assert len(received) == 1
    assert list(spool.incoming.iterdir()) == []


def test_a_different_resend_is_a_new_version_and_audited(tmp_path: Path, ingest: IngestService, spool: Spool, ledger: Ledger) -> None:
    """The same SOP Instance UID with other bytes is recorded as version 2 with its own digest, and audited as such."""
    study_uid = str(generate_uid())
    first, sop_uid = _instance(tmp_path, "a.dcm", study_uid=study_uid)
    second, _ = _instance(tmp_path, "b.dcm", study_uid=study_uid, sop_instance_uid=sop_uid)
    assert hashlib.sha256(first.read_bytes()).digest() != hashlib.sha256(second.read_bytes()).digest()
    assert ingest.store(_request(_incoming(spool, first))).status == st.SUCCESS
    assert ingest.store(_request(_incoming(spool, second))).status == st.SUCCESS
    rows = _rows(ledger, sop_uid)
    assert [r.version for r in rows] == [1, 2]
    assert rows[0].sha256 != rows[1].sha256
    receipts = [d.get("receipt") for e, _, d in _events(ledger, sop_uid) if e == "instance.received"]
    assert len(receipts) == 2
    assert receipts[0] != receipts[1]


def test_a_hostile_study_uid_is_refused_and_nothing_is_placed(tmp_path: Path, ingest: IngestService, spool: Spool, ledger: Ledger) -> None:
    """A Study Instance UID that is a path (``../../x``) is 0xC000 with a security alert; the spool holds no file and the ledger no row."""
    source, sop_uid = _instance(tmp_path, study_uid="../../escape")
    answer = ingest.store(_request(_incoming(spool, source)))
    assert answer.status == st.CANNOT_UNDERSTAND
    assert answer.comment.startswith("invalid-uid")
    assert _rows(ledger, sop_uid) == []
    assert not (tmp_path / "escape").exists()
    assert [p for p in spool.root.rglob("*") if p.is_file()] == []
    assert [(e, o) for e, o, _ in _events(ledger, sop_uid)] == [("security.alert", "failure")]


def test_a_failed_receive_is_out_of_resources(tmp_path: Path, ingest: IngestService, spool: Spool, ledger: Ledger) -> None:
    """A receive that met a full disk is answered 0xA700 with its reason and audited; no row is written."""
    source, sop_uid = _instance(tmp_path)
    error = ReceiveError("spool-unavailable", "receiving failed: No space left on device")
    answer = ingest.store(_request(_incoming(spool, source), receive_error=error))
    assert answer.status == st.OUT_OF_RESOURCES
    assert answer.comment.startswith("spool-unavailable")
    assert _rows(ledger, sop_uid) == []
    [(event, outcome, detail)] = _events(ledger, sop_uid)
    assert (event, outcome, detail["reason"]) == ("instance.received", "failure", "spool-unavailable")
    assert list(spool.incoming.iterdir()) == []


def test_an_unknown_calling_ae_may_not_store(tmp_path: Path, ingest: IngestService, spool: Spool, ledger: Ledger) -> None:
    """An AE title that is not a configured source gets 0x0124 and its file is discarded."""
    source, sop_uid = _instance(tmp_path)
    answer = ingest.store(_request(_incoming(spool, source), calling_ae="STRANGER"))
    assert answer.status == st.REFUSED_NOT_AUTHORIZED
    assert _rows(ledger, sop_uid) == []
    assert list(spool.incoming.iterdir()) == []


def test_a_request_whose_uids_differ_from_the_data_set_is_refused(
    tmp_path: Path, ingest: IngestService, spool: Spool, ledger: Ledger
) -> None:
    """A C-STORE whose Affected SOP Instance UID is not the data set's is refused (0xA900) and nothing is recorded."""
    source, sop_uid = _instance(tmp_path)
    answer = ingest.store(_request(_incoming(spool, source), sop_instance_uid=str(generate_uid())))
    assert answer.status == st.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert _rows(ledger, sop_uid) == []


def test_a_truncated_data_set_cannot_be_understood(tmp_path: Path, ingest: IngestService, spool: Spool, ledger: Ledger) -> None:
    """A data set cut short in its pixel data is 0xC000 (cannot-parse), never Success."""
    source, sop_uid = _instance(tmp_path, rows=128, columns=128)
    temp = _incoming(spool, source)
    data = temp.read_bytes()
    temp.write_bytes(data[: len(data) // 2])
    answer = ingest.store(_request(temp, sop_class_uid=CTImageStorage, sop_instance_uid=sop_uid))
    assert answer.status == st.CANNOT_UNDERSTAND
    assert _rows(ledger, sop_uid) == []


def _spool_on(root: Path) -> Spool:
    spool = Spool(root)
    spool.prepare()
    return spool


def _place_fails(spool: Spool, temp: Path, sop_uid: str, kind: type[SpoolError], code: int) -> None:
    """Placing ``temp`` raises ``kind``, caused by an OS error ``code``."""
    with pytest.raises(kind) as raised:
        spool.place(temp, str(generate_uid()), sop_uid)
    assert isinstance(raised.value.__cause__, OSError)
    assert raised.value.__cause__.errno == code


def _refused_once(ledger: Ledger, sop_uid: str, answer: StoreAnswer, status: int, reason: str) -> None:
    """The answer is ``status`` naming ``reason``; nothing is recorded for the instance but one failed-receipt record with ``reason``."""
    assert (answer.status, answer.comment.split(":")[0]) == (status, reason)
    assert _rows(ledger, sop_uid) == []
    assert [(e, o, d["reason"]) for e, o, d in _events(ledger, sop_uid)] == [("instance.received", "failure", reason)]


def _ingest_into(tmp_path: Path, ledger: Ledger, spool: Spool) -> IngestService:
    settings = Settings(node={"data_dir": str(tmp_path)}, sources=[{"ae_title": SOURCE, "host": "127.0.0.1", "port": 11112}])
    return IngestService(settings, ledger, spool)


def test_a_spool_out_of_space_is_out_of_resources(tmp_path: Path, ledger: Ledger) -> None:
    """A spool file system with no inode left (a real, small tmpfs): TransientSpoolError (ENOSPC), and ingest answers 0xA700."""
    source, sop_uid = _instance(tmp_path)
    with tmpfs(tmp_path / "fs", "size=4m,nr_inodes=16") as fs:
        spool = _spool_on(fs / "spool")
        temp = _incoming(spool, source)
        assert use_up_inodes(fs) > 0
        _place_fails(spool, temp, sop_uid, TransientSpoolError, errno.ENOSPC)
        answer = _ingest_into(tmp_path, ledger, spool).store(_request(temp))
        _refused_once(ledger, sop_uid, answer, st.OUT_OF_RESOURCES, "spool-unavailable")
        assert list(spool.incoming.iterdir()) == []


def test_a_read_only_spool_is_out_of_resources(tmp_path: Path, ledger: Ledger) -> None:
    """The spool's file system remounted read-only: TransientSpoolError (EROFS), 0xA700; writable again, the same instance is stored."""
    source, sop_uid = _instance(tmp_path)
    with tmpfs(tmp_path / "fs") as fs:
        spool = _spool_on(fs / "spool")
        ingest = _ingest_into(tmp_path, ledger, spool)
        temp = _incoming(spool, source)
        remount(fs, "ro")
        _place_fails(spool, temp, sop_uid, TransientSpoolError, errno.EROFS)
        assert ingest.store(_request(temp)).status == st.OUT_OF_RESOURCES
        remount(fs, "rw")
        assert ingest.store(_request(_incoming(spool, source))).status == st.SUCCESS
        assert len(_rows(ledger, sop_uid)) == 1


def test_a_name_the_file_system_refuses_cannot_be_understood(tmp_path: Path, ledger: Ledger) -> None:
    """A spool path the file system refuses as too long (ENAMETOOLONG) is PermanentSpoolError: 0xC000 spool-refused, not 0xA700."""
    source, sop_uid = _instance(tmp_path)
    # A spool root so deep that its incoming files fit within PATH_MAX (4096) but no study file does.
    depth = 4096 - 100 - len(str(tmp_path))
    root = tmp_path.joinpath(*["d" * 199] * (depth // 200), "s" * (depth % 200 or 1))
    spool = _spool_on(root)
    temp = _incoming(spool, source)
    _place_fails(spool, temp, sop_uid, PermanentSpoolError, errno.ENAMETOOLONG)
    answer = _ingest_into(tmp_path, ledger, spool).store(_request(temp))
    _refused_once(ledger, sop_uid, answer, st.CANNOT_UNDERSTAND, "spool-refused")
    assert list(spool.incoming.iterdir()) == []
