"""Digests of data sets: the exact rule (the bytes as received) and the content rule (for archives that transcode).

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
import struct
from collections.abc import Iterable

from pydicom import Dataset

_PREAMBLE = 128 + 4  # preamble and "DICM" (PS3.10 7.1)
_META_LENGTH_TAG = b"\x02\x00\x00\x00"  # (0002,0000) File Meta Information Group Length

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


def meta_end(header: bytes) -> int:
    """Offset of the data set in a Part 10 file: after the preamble and the File Meta Information group."""
    if len(header) < _PREAMBLE + 12 or header[128:132] != b"DICM" or header[132:136] != _META_LENGTH_TAG:
        msg = "not a DICOM Part 10 file with a File Meta Information Group Length"
        raise DigestError(msg)
    (group_length,) = struct.unpack("<I", header[_PREAMBLE + 8 : _PREAMBLE + 12])
    return _PREAMBLE + 12 + int(group_length)


def exact_digest(chunks: Iterable[bytes]) -> str:
    """Hex SHA-256 of the data set in a Part 10 file given as consecutive chunks, File Meta excluded."""
    sha = hashlib.sha256()
    skip: int | None = None
    seen = 0
    head = b""
    for chunk in chunks:
        if skip is None:
            head += chunk
            if len(head) < _PREAMBLE + 12:
                continue
            skip = meta_end(head)
            chunk, seen = head, 0  # noqa: PLW2901 - the buffered head is hashed from here on
        start = max(0, skip - seen)
        if start < len(chunk):
            sha.update(chunk[start:])
        seen += len(chunk)
    if skip is None:
        meta_end(head)  # raises: too short to be a Part 10 file
    return sha.hexdigest()


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
