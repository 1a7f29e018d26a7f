"""Synthetic DICOM Part 10 files made with pydicom, for tests and benchmarks.

Nothing here downloads anything (pydicom's ``get_testdata_file(s)`` would try to).
Pixel bytes come from ``os.urandom``: cheap, and incompressible so sizes are honest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom import config, dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

#: Document titles of IHE IOCM rejection notes (code value, meaning), scheme DCM.
REJECTION_TITLES: dict[str, str] = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}


@dataclass(frozen=True)
class Study:
    """What ``make_study`` wrote: the UIDs, in creation order, and the file of each instance."""

    study_uid: str
    series_uids: list[str]
    sop_instance_uids: list[str]
    paths: list[Path]


@contextlib.contextmanager
def _lenient_values() -> Iterator[None]:
    """Let pydicom accept invalid values (hostile UIDs, over-long UIDs) while writing them.

    pydicom validates a value when it is assigned, in ``writing_validation_mode``; the
    setting is process-wide, so it is restored at once.
    """
    previous = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        yield
    finally:
        config.settings.writing_validation_mode = previous


def _file_meta(sop_class: str, sop_instance_uid: str) -> FileMetaDataset:
    """Build the Part 10 file meta information for an Explicit VR Little Endian file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _common_tags(ds: Dataset, *, patient_id: str, study_uid: str, series_uid: str) -> None:
    """Fill the patient, study and series attributes shared by every generated object."""
    today = dt.datetime.now(tz=dt.UTC).strftime("%Y%m%d")
    ds.PatientName = f"TEST^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = today
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    # Derived from the study UID so that all instances of a study agree on it.
    digest = int.from_bytes(hashlib.sha256(study_uid.encode()).digest()[:8], "big")
    ds.AccessionNumber = f"A{digest % 10**15:015d}"


def make_instance(
    path: Path,
    *,
    study_uid: str,
    series_uid: str,
    sop_instance_uid: str,
    sop_class: str = CTImageStorage,
    patient_id: str = "PAT001",
    rows: int = 64,
    columns: int = 64,
    series_number: int = 1,
    instance_number: int = 1,
    modify: Callable[[Dataset], None] | None = None,
) -> Path:
    """Write one image instance to ``path`` and return ``path``.

    The UIDs are written exactly as given, even when invalid (``../../x``, 65 characters):
    tests use that to send hostile data. ``rows`` or ``columns`` of 0 leaves out the pixel
    data. ``modify`` may change the data set just before it is written.
    """
    with _lenient_values():
        ds = Dataset()
        ds.file_meta = _file_meta(sop_class, sop_instance_uid)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = UID(sop_class)
        ds.SOPInstanceUID = UID(sop_instance_uid)
        _common_tags(ds, patient_id=patient_id, study_uid=study_uid, series_uid=series_uid)
        ds.Modality = "CT"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = instance_number
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = generate_uid()
        if rows > 0 and columns > 0:
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = rows
            ds.Columns = columns
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = 0
            ds.RescaleSlope = 1
            ds.PixelData = os.urandom(rows * columns * 2)
        if modify is not None:
            modify(ds)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
    return path


def make_study(
    directory: Path,
    count: int,
    *,
    rows: int = 64,
    columns: int = 64,
    study_uid: str | None = None,
    patient_id: str = "PAT001",
    sop_class: str = CTImageStorage,
    series_per_study: int = 1,
) -> Study:
    """Write a study of ``count`` instances into ``directory`` (created if needed).

    Instances are spread over ``series_per_study`` series in consecutive blocks. Each file
    is named after its SOP Instance UID, so several studies can share a directory.
    ``rows=512, columns=512`` gives the 512 KiB instances of the benchmarks.
    """
    if count < 0 or series_per_study < 1:
        msg = f"need count >= 0 and series_per_study >= 1, got {count} and {series_per_study}"
        raise ValueError(msg)
    study = study_uid or str(generate_uid())
    series_uids = [str(generate_uid()) for _ in range(series_per_study)]
    per_series = max(1, -(-count // series_per_study))  # ceiling division
    sop_uids: list[str] = []
    paths: list[Path] = []
    for index in range(count):
        series_index = min(index // per_series, series_per_study - 1)
        sop_uid = str(generate_uid())
        paths.append(
            make_instance(
                directory / f"{sop_uid}.dcm",
                study_uid=study,
                series_uid=series_uids[series_index],
                sop_instance_uid=sop_uid,
                sop_class=sop_class,
                patient_id=patient_id,
                rows=rows,
                columns=columns,
                series_number=series_index + 1,
                instance_number=index - series_index * per_series + 1,
            ),
        )
        sop_uids.append(sop_uid)
    return Study(study_uid=study, series_uids=series_uids, sop_instance_uids=sop_uids, paths=paths)


def _code(value: str, meaning: str) -> Dataset:
    """Build one DCM code sequence item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def make_rejection_note(
    path: Path,
    study: Study,
    *,
    title: str = "113001",
    sop_instance_uids: list[str] | None = None,
    patient_id: str = "PAT001",
) -> Path:
    """Write an IHE IOCM rejection note (Key Object Selection Document) for ``study``.

    ``title`` is one of ``REJECTION_TITLES``; ``sop_instance_uids`` chooses the rejected
    instances (default: all of the study). The note is its own series in the same study.
    Each rejected instance is assumed to belong to the series holding it in ``study``.
    """
    rejected = set(sop_instance_uids if sop_instance_uids is not None else study.sop_instance_uids)
    note_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(KeyObjectSelectionDocumentStorage, note_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = KeyObjectSelectionDocumentStorage
    ds.SOPInstanceUID = note_uid
    _common_tags(ds, patient_id=patient_id, study_uid=study.study_uid, series_uid=generate_uid())
    ds.Modality = "KO"
    ds.SeriesNumber = 999
    ds.InstanceNumber = 1
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = "120000"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code(title, REJECTION_TITLES.get(title, "Rejected"))])
    # Group the referenced instances by series, as PS3.3 C.17.2 requires.
    by_series: dict[str, list[Dataset]] = {}
    for path_, sop_uid in zip(study.paths, study.sop_instance_uids, strict=True):
        if sop_uid not in rejected:
            continue
        header = dcmread(path_, stop_before_pixels=True)
        ref = Dataset()
        ref.ReferencedSOPClassUID = header.SOPClassUID
        ref.ReferencedSOPInstanceUID = sop_uid
        by_series.setdefault(str(header.SeriesInstanceUID), []).append(ref)
    series_items = []
    for series_uid, refs in by_series.items():
        series_item = Dataset()
        series_item.SeriesInstanceUID = series_uid
        series_item.ReferencedSOPSequence = Sequence(refs)
        series_items.append(series_item)
    evidence = Dataset()
    evidence.StudyInstanceUID = study.study_uid
    evidence.ReferencedSeriesSequence = Sequence(series_items)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_undefined_length_instance(path: Path, *, patient_id: str = "UNDEFLEN") -> Path:
    """Write a Secondary Capture instance with an undefined-length sequence and item, as many modalities write them.

    A sender that parses the data set and writes it again (DCMTK ``dcmsend``, for one) gives
    the sequence explicit lengths: the bytes differ although the content is the same.
    """
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = patient_id, "OT"
    ds.ConceptNameCodeSequence = Sequence([_code("113001", REJECTION_TITLES["113001"])])
    ds["ConceptNameCodeSequence"].is_undefined_length = True
    ds.ConceptNameCodeSequence[0].is_undefined_length_sequence_item = True
    ds.file_meta = _file_meta(SecondaryCaptureImageStorage, ds.SOPInstanceUID)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return path
