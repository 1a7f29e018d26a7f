import errno
import hashlib
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from guard.domain.digest import NotPart10Error, dataset_offset
from guard.domain.errors import InvalidUIDError, PermanentSpoolError, TransientSpoolError
from guard.spool import Spool, spool_error


def _file(path: Path, *, source_ae: str = "A") -> tuple[Path, bytes]:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = source_ae
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientID = "P"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    return path, raw[dataset_offset(raw[:4096]) :]


def test_digest_covers_the_data_set_not_the_file_meta(tmp_path: Path) -> None:
    """Two files with the same data set but different file meta have the same digest."""
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    study = generate_uid()
    a, body = _file(spool.incoming / "a.dcm", source_ae="ONE")
    stored_a = spool.place(a, study, "1.2.3.4")
    b, _ = _file(spool.incoming / "b.dcm", source_ae="TWO")
    stored_b = spool.place(b, study, "1.2.3.4")
    assert stored_a.sha256 == stored_b.sha256 == hashlib.sha256(body).hexdigest()
    assert (spool.root / stored_a.relative_path).is_file()
    assert stored_a.relative_path == f"{study}/1.2.3.4-{stored_a.sha256}.dcm"


@pytest.mark.parametrize("bad", ["../../x", "1.2.3/../../..", "a" * 65, ""])
def test_hostile_uids_never_become_paths(tmp_path: Path, bad: str) -> None:
    """A bad UID raises PermanentSpoolError (from InvalidUIDError) before anything is written; nothing appears outside the spool."""
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    path, _ = _file(spool.incoming / "x.dcm")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(PermanentSpoolError) as study:
        spool.place(path, bad, "1.2.3.4")
    with pytest.raises(PermanentSpoolError) as sop:
        spool.place(path, "1.2.3", bad)
    assert isinstance(study.value.__cause__, InvalidUIDError)
    assert isinstance(sop.value.__cause__, InvalidUIDError)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_not_a_part10_file_is_refused(tmp_path: Path) -> None:
    """A file without the DICM prefix and group length cannot be spooled, ever: PermanentSpoolError, and nothing placed."""
    with pytest.raises(NotPart10Error):
        dataset_offset(b"\0" * 200)
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    path = spool.incoming / "upload"
    path.write_bytes(b"\0" * 200)
    with pytest.raises(PermanentSpoolError):
        spool.place(path, "1.2.3", "1.2.3.4")
    assert list(spool.stored_files()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOENT, errno.EACCES])
def test_a_failing_storage_is_transient(code: int) -> None:
    """Out of space or quota, I/O errors, a read-only or missing volume: the storage is at fault; the instance is worth another try."""
    error = spool_error(OSError(code, "failed"), "spool write")
    assert isinstance(error, TransientSpoolError)
    assert str(error) == "spool write failed: failed"


@pytest.mark.parametrize("code", [errno.ENAMETOOLONG, errno.EILSEQ])
def test_a_name_the_file_system_refuses_is_permanent(code: int) -> None:
    """A name the file system refuses will be refused every time: PermanentSpoolError."""
    assert isinstance(spool_error(OSError(code, "refused"), "spool write"), PermanentSpoolError)


def test_a_spooled_file_is_readable_until_it_is_gone(tmp_path: Path) -> None:
    """``readable`` gives the path of a placed file; once the file is gone it raises PermanentSpoolError (sending again cannot help)."""
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    path, _ = _file(spool.incoming / "a.dcm")
    stored = spool.place(path, "1.2.3", "1.2.3.4")
    assert spool.readable(stored.relative_path) == spool.root / stored.relative_path
    (spool.root / stored.relative_path).unlink()
    with pytest.raises(PermanentSpoolError, match="spool file missing"):
        spool.readable(stored.relative_path)


def test_a_spooled_file_that_is_not_part10_is_permanent(tmp_path: Path) -> None:
    """A spooled file whose header is no longer Part 10 (overwritten) is PermanentSpoolError when read back for sending."""
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    path, _ = _file(spool.incoming / "a.dcm")
    stored = spool.place(path, "1.2.3", "1.2.3.4")
    (spool.root / stored.relative_path).write_bytes(b"\0" * 300)
    with pytest.raises(PermanentSpoolError, match="Part 10"):
        spool.readable(stored.relative_path)
