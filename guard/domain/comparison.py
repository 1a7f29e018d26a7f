"""How a retrieved copy is compared: the exact rule (the bytes as received) and the content rule (for archives that transcode).

The exact rule is the spool's receive digest: SHA-256 of the data set's encoded bytes, File Meta
Information excluded (PS3.10 7.1: the meta group says who wrote the file and how, not what the
instance is, and differs between the sender, the guard and the archive). A byte-for-byte copy
in the same transfer syntax has the same exact digest; anything else (one changed pixel, a
transcoded or recompressed copy, an element coerced) has another.

The content rule is for archives that change the encoding on purpose: SHA-256 over the key
attributes (``CONTENT_KEYWORDS``: identity, patient, geometry and pixel description) and the
decoded pixel values. It proves that the archive returns the same instance, for the same
patient, with the same pixels after decoding; it does not prove that any other attribute is
unchanged (an archive may coerce a description or drop a private element without detection).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pydicom import Dataset

from guard.domain.digest import NotPart10Error, dataset_sha256

#: Attributes the content rule covers besides the decoded pixel values.
CONTENT_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyDate",
    "Modality",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
)


class DigestError(ValueError):
    """The bytes are not a DICOM Part 10 file whose data set can be digested."""


def exact_digest(chunks: Iterable[bytes]) -> str:
    """The exact rule: ``guard.domain.digest``'s data-set digest of a Part 10 file given as chunks; ``DigestError`` when it is not one."""
    try:
        return dataset_sha256(chunks)
    except NotPart10Error as exc:
        raise DigestError(str(exc)) from exc


def content_digest(ds: Dataset) -> str:
    """Hex SHA-256 of the key attributes' values and the decoded pixel values of ``ds``.

    Raises ``DigestError`` when the pixel data cannot be decoded here (a compressed transfer
    syntax without a decoder installed): the comparison cannot be made, which is never a match.
    """
    sha = hashlib.sha256()
    for keyword in CONTENT_KEYWORDS:
        value = ds.get(keyword)
        text = "" if value is None else str(value).strip()
        sha.update(f"{keyword}={text}\n".encode())
    if "PixelData" in ds:
        try:
            pixels = ds.pixel_array
        except Exception as exc:
            msg = f"pixel data cannot be decoded: {exc}"
            raise DigestError(msg) from exc
        sha.update(str(pixels.dtype.str).encode() + str(pixels.shape).encode())
        sha.update(pixels.tobytes())
    return sha.hexdigest()
