"""The spool: durable copies of received instances, kept until the archive has confirmed them.

Layout under the spool root::

    .incoming/                      temporary files being received (same file system)
    <StudyInstanceUID>/<SOPInstanceUID>-<sha256>.dcm

UIDs are validated against the DICOM UID grammar before they become path components, so a
hostile UID cannot leave the spool. A file is fsynced, renamed into place, and its folder
fsynced before the ledger hears of it (invariant 1).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from guard.domain.errors import SpoolError
from guard.domain.uids import require_uid

_CHUNK = 1 << 20
_PREAMBLE = 128 + 4  # preamble and "DICM" (PS3.10 7.1)


@dataclass(frozen=True)
class StoredFile:
    """An instance file that is durable in the spool."""

    relative_path: str
    size: int
    sha256: str


def dataset_offset(header: bytes) -> int:
    """Offset of the data set in a Part 10 file, after the File Meta Information group.

    The group starts with (0002,0000) File Meta Information Group Length, encoded Explicit VR
    Little Endian (PS3.10 7.1): tag (4 bytes), VR "UL" (2), length (2), value (4).
    """
    if len(header) < _PREAMBLE + 12 or header[128:132] != b"DICM" or header[132:136] != b"\x02\x00\x00\x00":
        msg = "not a DICOM Part 10 file with a File Meta Information Group Length"
        raise SpoolError(msg)
    (group_length,) = struct.unpack("<I", header[_PREAMBLE + 8 : _PREAMBLE + 12])
    return _PREAMBLE + 12 + int(group_length)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool folder."""

    def __init__(self, root: Path) -> None:
        """Use ``root``; its folders are created by ``prepare``."""
        self.root = root
        self.incoming = root / ".incoming"

    def prepare(self) -> None:
        """Create the spool folders."""
        try:
            self.incoming.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the spool at {self.root}: {exc}"
            raise SpoolError(msg) from exc

    def path_of(self, relative_path: str) -> Path:
        """The absolute path of a spooled file."""
        return self.root / relative_path

    def place(self, temp_path: Path, study_uid: str, sop_instance_uid: str) -> StoredFile:
        """Make the received file at ``temp_path`` durable in the spool and return its facts."""
        study = require_uid(study_uid, "StudyInstanceUID")
        sop = require_uid(sop_instance_uid, "SOPInstanceUID")
        try:
            digest, size = self._digest_and_sync(temp_path)
            folder = self.root / study
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                _fsync_dir(self.root)
            relative = f"{study}/{sop}-{digest}.dcm"
            temp_path.replace(self.root / relative)
            _fsync_dir(folder)
        except OSError as exc:
            msg = f"spool write failed: {exc.strerror or exc}"
            raise SpoolError(msg) from exc
        return StoredFile(relative_path=relative, size=size, sha256=digest)

    @staticmethod
    def _digest_and_sync(path: Path) -> tuple[str, int]:
        """SHA-256 of the data set (not the file meta, which depends on the sender), then fsync."""
        sha = hashlib.sha256()
        with path.open("r+b") as fh:
            header = fh.read(4096)
            offset = dataset_offset(header)
            if offset <= len(header):
                sha.update(header[offset:])
            else:
                fh.seek(offset)
            while chunk := fh.read(_CHUNK):
                sha.update(chunk)
            fh.flush()
            os.fsync(fh.fileno())
            size = fh.tell()
        return sha.hexdigest(), size

    def discard(self, temp_path: Path) -> None:
        """Remove a temporary file that will not be kept; missing or unremovable is fine (it is not in the spool proper)."""
        with contextlib.suppress(OSError):
            temp_path.unlink(missing_ok=True)
