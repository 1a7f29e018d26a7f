"""The structural check of received files: real objects pass, damaged ones are named, nothing raises."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from guard.domain.structure import find_problem
from tests.support.datasets import make_instance, make_rejection_note, make_study


def _instance(tmp_path: Path, name: str = "ct.dcm") -> Path:
    return make_instance(tmp_path / name, study_uid=generate_uid(), series_uid=generate_uid(), sop_instance_uid=generate_uid())


def test_real_objects_pass(tmp_path: Path) -> None:
    """Explicit and implicit VR images, a rejection note with nested sequences, encapsulated pixel data: no problem."""
    ct = _instance(tmp_path)
    assert find_problem(ct, str(ExplicitVRLittleEndian)) is None
    implicit = tmp_path / "implicit.dcm"
    ds = dcmread(ct)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(implicit, implicit_vr=True, little_endian=True)
    assert find_problem(implicit, str(ImplicitVRLittleEndian)) is None
    note = make_rejection_note(tmp_path / "note.dcm", make_study(tmp_path / "s", 2))
    assert find_problem(note, str(ExplicitVRLittleEndian)) is None
    encapsulated = tmp_path / "jpeg.dcm"
    ds = dcmread(ct)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\0" * 98 + b"\xff\xd9", b"\xff\xd8" + b"\1" * 40 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(encapsulated)
    assert find_problem(encapsulated, str(JPEGBaseline8Bit)) is None


def test_lying_transfer_syntax_and_truncation_are_named(tmp_path: Path) -> None:
    """An implicit file read as explicit, and a file cut inside an element, are reported."""
    ct = _instance(tmp_path)
    implicit = tmp_path / "implicit.dcm"
    ds = dcmread(ct)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(implicit, implicit_vr=True, little_endian=True)
    assert "invalid VR" in str(find_problem(implicit, str(ExplicitVRLittleEndian)))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(ct.read_bytes()[:-100])
    assert find_problem(cut, str(ExplicitVRLittleEndian)) is not None
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert find_problem(empty, str(ExplicitVRLittleEndian)) is not None


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real rejection note's bytes (nested sequences)."""
    folder = tmp_path_factory.mktemp("sample")
    return make_rejection_note(folder / "note.dcm", make_study(folder / "s", 2)).read_bytes()


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=hs.integers(min_value=0), flips=hs.lists(hs.tuples(hs.integers(min_value=0), hs.integers(0, 255)), max_size=8))
def test_damaged_bytes_never_raise(tmp_path: Path, sample: bytes, cut: int, flips: list[tuple[int, int]]) -> None:
    """Any truncation and any byte changes: a problem or None, never an exception."""
    data = bytearray(sample[: cut % (len(sample) + 1)])
    for where, value in flips:
        if data:
            data[where % len(data)] = value
    path = tmp_path / "damaged.dcm"
    path.write_bytes(bytes(data))
    result = find_problem(path, str(ExplicitVRLittleEndian))
    assert result is None or isinstance(result, str)
