"""The digest the guard records for an instance: SHA-256 of the data set, the File Meta Information left out.

The file meta group (PS3.10 7.1) depends on whoever wrote the file (implementation UID and
version, source AE title), so two faithful copies of one instance differ there; the data set
after it is what the archive must hand back unchanged. The spool computes this digest on
receipt, and a retrieve from the archive (WADO-RS, C-GET) computes it the same way while the
copy streams past: ``DatasetDigest`` takes the bytes of a Part 10 file in chunks of any size
and never keeps more than the first few bytes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from guard.domain.errors import GuardError

_PREAMBLE = 128 + 4  # preamble and "DICM" (PS3.10 7.1)
#: Bytes needed to read the File Meta Information Group Length element.
HEADER_LENGTH = _PREAMBLE + 12


class NotPart10Error(GuardError):
    """Not a DICOM Part 10 file with a File Meta Information Group Length."""


def dataset_offset(header: bytes) -> int:
    """Offset of the data set in a Part 10 file, after the File Meta Information group.

    ``header`` is at least the first ``HEADER_LENGTH`` bytes. The group starts with (0002,0000)
    File Meta Information Group Length, encoded Explicit VR Little Endian (PS3.10 7.1): tag
    (4 bytes), VR "UL" (2), length (2), value (4).
    """
    if len(header) < HEADER_LENGTH or header[128:132] != b"DICM" or header[132:136] != b"\x02\x00\x00\x00":
        raise NotPart10Error
    (group_length,) = struct.unpack("<I", header[_PREAMBLE + 8 : HEADER_LENGTH])
    return HEADER_LENGTH + int(group_length)


class DatasetDigest:
    """SHA-256 of the data set of a Part 10 file fed in chunks (``update``), file meta excluded."""

    def __init__(self) -> None:
        """Start with nothing fed."""
        self._sha = hashlib.sha256()
        self._head = bytearray()
        self._skip: int | None = None  # bytes of file meta still to skip, once the group length is known
        self.size = 0

    def update(self, chunk: bytes) -> None:
        """Feed the next bytes of the file; ``NotPart10Error`` as soon as the header shows it is not one."""
        self.size += len(chunk)
        if self._skip is None:
            self._head += chunk
            if len(self._head) < HEADER_LENGTH:
                return
            chunk, self._head = bytes(self._head), bytearray()
            self._skip = dataset_offset(chunk)
        if self._skip >= len(chunk):
            self._skip -= len(chunk)
            return
        self._sha.update(memoryview(chunk)[self._skip :])
        self._skip = 0

    def hexdigest(self) -> str:
        """The digest, hex; ``NotPart10Error`` when the file ended inside its header or file meta."""
        if self._skip is None or self._skip > 0:
            msg = f"{NotPart10Error.__doc__} (it ends after {self.size} bytes, inside the header or file meta)"
            raise NotPart10Error(msg)
        return self._sha.hexdigest()


def dataset_sha256(chunks: Iterable[bytes]) -> str:
    """The digest of the Part 10 file made of ``chunks``."""
    digest = DatasetDigest()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()
