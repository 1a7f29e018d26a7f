"""The File Meta Information of each received data set, written directly instead of through pydicom.

With ``STORE_RECV_CHUNKED_DATASET`` pynetdicom streams a received C-STORE data set into a file
and starts that file with a preamble, ``DICM`` and a File Meta group (PS3.10 7.1) built from the
request's SOP Class and Instance UIDs and the presentation context's transfer syntax: it builds a
``FileMetaDataset`` (``dsutils.create_file_meta``) and writes it with pydicom's
``write_file_meta_info``. In the profile of the ingest leg that took about a quarter of the
receiving (DUL) thread's CPU, every instance, for seven elements whose layout never changes.

``prepare`` returns the three values instead of a data set, and ``write`` writes the group
itself: Explicit VR Little Endian (PS3.10 7.1), a group length, the version ``00 01``, UIDs
padded to even length with a NUL (PS3.5 6.2), the implementation UID and version name that
pynetdicom would write. Values that are not plain UIDs (which pydicom may treat differently)
go through pynetdicom's and pydicom's own functions, so the file starts with the bytes pynetdicom
would have written either way; ``tests/unit/test_file_meta.py`` compares both.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom.filebase import DicomIO
from pydicom.filewriter import write_file_meta_info as _pydicom_write
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, dimse_messages
from pynetdicom.dsutils import create_file_meta as _pynetdicom_create

#: What is written directly: UIDs as PS3.5 9.1 draws them (digits and dots, at most 64 characters).
_PLAIN_UID = re.compile(r"[0-9.]{1,64}")
_SHORT = struct.Struct("<HH2sH")


@dataclass(frozen=True, slots=True)
class PreparedFileMeta:
    """The values of a received data set's File Meta group, not yet a pydicom data set."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


def _element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return _SHORT.pack(2, element, vr, len(value)) + value


def _encoded(meta: PreparedFileMeta) -> bytes:
    """Elements (0002,0001) to (0002,0013) after the group length, as pydicom writes them."""
    return b"".join(
        (
            struct.pack("<HH2sHL", 2, 1, b"OB", 0, 2) + b"\x00\x01",
            _element(2, b"UI", meta.sop_class_uid.encode("ascii"), b"\0"),
            _element(3, b"UI", meta.sop_instance_uid.encode("ascii"), b"\0"),
            _element(0x10, b"UI", meta.transfer_syntax.encode("ascii"), b"\0"),
            _element(0x12, b"UI", PYNETDICOM_IMPLEMENTATION_UID.encode("ascii"), b"\0"),
            _element(0x13, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" "),
        )
    )


def prepare(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, **others: Any) -> Any:
    """Pynetdicom's ``create_file_meta``: plain UIDs become a ``PreparedFileMeta``; anything else its own data set."""
    values = (str(sop_class_uid), str(sop_instance_uid), str(transfer_syntax))
    if others or not all(_PLAIN_UID.fullmatch(value) for value in values):
        return _pynetdicom_create(
            sop_class_uid=UID(sop_class_uid), sop_instance_uid=UID(sop_instance_uid), transfer_syntax=UID(transfer_syntax), **others
        )
    return PreparedFileMeta(*values)


def write(fp: DicomIO | BinaryIO, file_meta: Any, enforce_standard: bool = True) -> None:  # noqa: FBT001, FBT002 - pydicom's signature
    """Pydicom's ``write_file_meta_info``, with a ``PreparedFileMeta`` written directly."""
    if not isinstance(file_meta, PreparedFileMeta):
        _pydicom_write(fp, file_meta, enforce_standard=enforce_standard)  # type: ignore[arg-type]
        return
    body = _encoded(file_meta)
    fp.write(struct.pack("<HH2sHL", 2, 0, b"UL", 4, len(body)) + body)


def install() -> None:
    """Write the File Meta of every received data set with ``prepare`` and ``write`` (pynetdicom's ``dimse_messages`` only)."""
    dimse_messages.create_file_meta = prepare  # type: ignore[attr-defined]
    dimse_messages.write_file_meta_info = write  # type: ignore[attr-defined]
