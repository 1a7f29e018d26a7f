"""The recorded elements kept by the structural walk decode exactly as ``dcmread`` decodes them."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as strat
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from guard.domain.header import RECORDED_TAGS, from_inspection
from guard.domain.iocm import KEY_OBJECT_SELECTION
from guard.domain.structure import MAX_KEPT_VALUE, inspect
from guard.runtime import file_meta

_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]
_CHARSETS = [None, "ISO_IR 100", "ISO_IR 192", "ISO_IR 144", "ISO 2022 IR 87", "nonsense"]
_KEYWORDS = ["SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID"]
_TEXT = strat.text(alphabet=strat.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
_UID_LIKE = strat.one_of(strat.just(""), strat.builds(generate_uid), _TEXT.map(lambda t: t[:70]))


def _write(path: Path, syntax: str, values: dict[str, object], *, nested: bool) -> None:
    ds = Dataset()
    for keyword, value in values.items():
        if value is not None:
            setattr(ds, keyword, value)
    if nested:  # the same tags inside a sequence must not be taken for the top-level ones
        inner = Dataset()
        inner.StudyInstanceUID = "9.9.9"
        inner.PatientID = "INNER"
        ds.ReferencedSeriesSequence = Sequence([inner])
    # As the guard receives it: the File Meta pynetdicom writes, then the data set in the negotiated syntax.
    body = DicomBytesIO()
    body.is_implicit_VR, body.is_little_endian = syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dataset(body, ds)
    with path.open("wb") as out:
        out.write(b"\0" * 128 + b"DICM")
        file_meta.write(out, file_meta.prepare(sop_class_uid="1.2.840.10008.5.1.4.1.1.7", sop_instance_uid="1.2.3", transfer_syntax=syntax))
        out.write(body.getvalue())


def _decoded(ds: Dataset) -> dict[str, object]:
    """What the ingest path reads, each element's value or the kind of error pydicom raises for it."""
    out: dict[str, object] = {}
    for keyword in _KEYWORDS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = ds.get(keyword)
            out[keyword] = None if value is None else str(value)
        except (ValueError, LookupError, UnicodeError) as error:
            out[keyword] = type(error).__name__
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    syntax=strat.sampled_from(_SYNTAXES),
    charset=strat.sampled_from(_CHARSETS),
    patient_id=strat.one_of(strat.none(), _TEXT),
    modality=strat.one_of(strat.none(), strat.sampled_from(["CT", "MR ", "", "OT"])),
    uids=strat.lists(_UID_LIKE, min_size=3, max_size=3),
    nested=strat.booleans(),
)
@example(
    syntax=ExplicitVRLittleEndian,
    charset="ISO_IR 192",
    patient_id="Müller^Jürgen",
    modality="CT",
    uids=["1.2", "1.23", "1.2.3"],
    nested=True,
)
def test_kept_values_decode_as_dcmread_decodes_them(
    syntax: str, charset: str | None, patient_id: str | None, modality: str | None, uids: list[str], *, nested: bool
) -> None:
    """Any mix of syntax, character set and values: the header from the walk gives what dcmread gives, element by element."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.dcm"
        values = {
            "SpecificCharacterSet": charset,
            "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7",
            "SOPInstanceUID": uids[0],
            "StudyInstanceUID": uids[1],
            "SeriesInstanceUID": uids[2],
            "PatientID": patient_id,
            "Modality": modality,
        }
        try:
            _write(path, syntax, values, nested=nested)
        except (ValueError, UnicodeError, LookupError, TypeError):
            event("not writable")  # pydicom cannot write this combination (it re-raises an encoding error as a TypeError)
            return
        inspection = inspect(path, syntax, RECORDED_TAGS)
        assert inspection.problem is None
        header = from_inspection(inspection, syntax)
        assert header is not None
        assert _decoded(dcmread(path, stop_before_pixels=True)) == _decoded(header)


def test_long_values_and_rejection_notes_are_read_whole(tmp_path: Path) -> None:
    """A recorded value too long to keep, or a Key Object Selection, gives None: the caller reads the file with dcmread."""
    long_value = tmp_path / "long.dcm"
    _write(long_value, ExplicitVRLittleEndian, {"SOPClassUID": "1.2.3", "PatientID": "P" * (MAX_KEPT_VALUE + 1)}, nested=False)
    assert from_inspection(inspect(long_value, ExplicitVRLittleEndian, RECORDED_TAGS), ExplicitVRLittleEndian) is None
    note = tmp_path / "kos.dcm"
    _write(note, ExplicitVRLittleEndian, {"SOPClassUID": KEY_OBJECT_SELECTION, "PatientID": "P"}, nested=False)
    assert from_inspection(inspect(note, ExplicitVRLittleEndian, RECORDED_TAGS), ExplicitVRLittleEndian) is None
    plain = tmp_path / "plain.dcm"
    _write(plain, ExplicitVRLittleEndian, {"SOPClassUID": "1.2.3", "PatientID": "P"}, nested=True)
    header = from_inspection(inspect(plain, ExplicitVRLittleEndian, RECORDED_TAGS), ExplicitVRLittleEndian)
    assert header is not None
    assert header.PatientID == "P"
    assert "StudyInstanceUID" not in header  # only inside the sequence: not a top-level value
