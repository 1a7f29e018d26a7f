"""The spool: durable copies of received instances, kept until the archive has confirmed them.

Layout under the spool root::

    .incoming/                      temporary files being received (same file system)
    <StudyInstanceUID>/<SOPInstanceUID>-<sha256>.dcm

UIDs are validated against the DICOM UID grammar before they become path components, so a
hostile UID cannot leave the spool. A file is fsynced, renamed into place, and its folder
fsynced before the ledger hears of it (invariant 1).

The spool keeps no file in the page cache (ADR 0025): a file is written once and read once soon
after, by the forwarder, so its pages are given back once it is durable (``_digest_and_sync``),
read ahead while the instance before it is sent (``read_ahead``), and given back again once it is
sent (``drop_pages``). The receive that comes next then writes into pages just freed instead of
taking new ones, and the cache stays for what is read again (the ledger's).

What a crash leaves behind (a temporary file in ``.incoming``, a complete file renamed into
place whose ledger row was never committed) is listed here (``leftover_incoming``,
``stored_files``) and removed by ``guard.services.sweep``, which decides what may go;
``remove_if_unchanged`` takes the same lock as the rename in ``place``, so a file placed again
under the same name is never the one removed.

Every failure is a ``SpoolError`` of one of two kinds, decided here by its cause and nowhere
else: a ``TransientSpoolError`` when the spool's storage fails (no space, quota, I/O error,
read-only, not mounted: worth another attempt once someone fixes it; a sender gets 0xA700), a
``PermanentSpoolError`` when it is this instance (an invalid UID, a name the file system
refuses, a spooled file that is gone or not a Part 10 file: retrying will not help).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from guard.domain.digest import HEADER_LENGTH, DatasetDigest, NotPart10Error, dataset_offset
from guard.domain.errors import InvalidUIDError, PermanentSpoolError, SpoolError, TransientSpoolError
from guard.domain.uids import is_valid_uid, require_uid

_CHUNK = 1 << 20
#: A spooled file's name: ``<SOPInstanceUID>-<sha256>.dcm`` (anything else in a study folder is not the guard's).
_STORED_NAME = re.compile(r"(?P<sop>[0-9.]{1,64})-[0-9a-f]{64}\.dcm")
#: OS errors that are about the name, not the storage: the file system will refuse that name every time.
_REFUSED_NAME = frozenset({errno.ENAMETOOLONG, errno.EILSEQ})


def spool_error(exc: OSError, doing: str) -> SpoolError:
    """The spool's error for ``exc``, met while ``doing``: permanent for a name the file system refuses, else transient.

    Out of space (ENOSPC), over quota (EDQUOT), I/O errors (EIO), a read-only or missing
    volume: the storage, not the instance, is at fault, and the same instance will be taken
    once it is fixed.
    """
    kind = PermanentSpoolError if exc.errno in _REFUSED_NAME else TransientSpoolError
    return kind(f"{doing} failed: {exc.strerror or exc}")


@dataclass(frozen=True)
class FileIdentity:
    """Which file a path held when it was listed: a rename over the path (the same instance placed again) changes it."""

    inode: int
    ctime_ns: int
    size: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        """The identity in ``st``."""
        return cls(st.st_ino, st.st_ctime_ns, st.st_size)


@dataclass(frozen=True)
class SpoolEntry:
    """A file found in the spool, with when it was last written or renamed (``touched``, seconds since the epoch)."""

    path: Path
    relative_path: str
    study_uid: str
    identity: FileIdentity
    touched: float


@dataclass(frozen=True)
class StoredFile:
    """An instance file that is durable in the spool."""

    relative_path: str
    size: int
    sha256: str


def _advise(fd: int, advice: int) -> None:
    """Page-cache advice for the whole file open at ``fd``; only advice, so a refusal changes nothing."""
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, advice)


def _advise_path(path: Path, advice: int) -> None:
    """``_advise`` for the file at ``path``; a file that cannot be opened is left to the read that needs it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        _advise(fd, advice)
    finally:
        os.close(fd)


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
        # Held across the rename in ``place`` and the check-and-remove in ``remove_if_unchanged``.
        self._rename_lock = threading.Lock()

    def prepare(self) -> None:
        """Create the spool folders."""
        try:
            self.incoming.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise spool_error(exc, f"creating the spool at {self.root}") from exc

    def path_of(self, relative_path: str) -> Path:
        """The absolute path of a spooled file."""
        return self.root / relative_path

    def read_ahead(self, relative_path: str) -> None:
        """Ask the kernel to read a spooled file into memory in the background (it is sent next)."""
        _advise_path(self.path_of(relative_path), os.POSIX_FADV_WILLNEED)

    @staticmethod
    def drop_pages(path: Path) -> None:
        """Give back the cached pages of a spooled file that has been sent (they are clean: the file is durable)."""
        _advise_path(path, os.POSIX_FADV_DONTNEED)

    def place(self, temp_path: Path, study_uid: str, sop_instance_uid: str, digest: str | None = None) -> StoredFile:
        """Make the received file at ``temp_path`` durable in the spool and return its facts.

        ``digest``: the data set's digest already taken as it streamed in (``guard.runtime``);
        without it the file is read back and hashed. Raises ``PermanentSpoolError`` for an invalid
        UID (nothing is written) or a file that is not Part 10, ``TransientSpoolError`` when the
        storage fails.
        """
        try:
            study = require_uid(study_uid, "StudyInstanceUID")
            sop = require_uid(sop_instance_uid, "SOPInstanceUID")
        except InvalidUIDError as exc:
            raise PermanentSpoolError(str(exc)) from exc
        try:
            digest, size = self._digest_and_sync(temp_path, digest)
            folder = self.root / study
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                _fsync_dir(self.root)
            relative = f"{study}/{sop}-{digest}.dcm"
            with self._rename_lock:
                temp_path.replace(self.root / relative)
            _fsync_dir(folder)
        except OSError as exc:
            raise spool_error(exc, "spool write") from exc
        return StoredFile(relative_path=relative, size=size, sha256=digest)

    @staticmethod
    def _digest_and_sync(path: Path, known: str | None) -> tuple[str, int]:
        """The data set's digest (``guard.domain.digest``: the file meta depends on the sender) unless ``known``, then fsync."""
        with path.open("r+b") as fh:
            if known is None:
                digest = DatasetDigest()
                try:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                    known = digest.hexdigest()
                except NotPart10Error as exc:
                    raise PermanentSpoolError(str(exc)) from exc
            os.fsync(fh.fileno())
            # Durable now, so its pages are clean: given back, they are what the next receive writes into.
            _advise(fh.fileno(), os.POSIX_FADV_DONTNEED)
            size = os.fstat(fh.fileno()).st_size
        return known, size

    def readable(self, relative_path: str) -> Path:
        """The path of a spooled file, once its Part 10 header has been read back (before it is sent).

        Raises ``PermanentSpoolError`` when the file is gone or is not a Part 10 file (sending it
        again will not bring it back), ``TransientSpoolError`` when the storage fails.
        """
        path = self.path_of(relative_path)
        try:
            with path.open("rb") as fh:
                dataset_offset(fh.read(HEADER_LENGTH))
        except NotPart10Error as exc:
            raise PermanentSpoolError(f"{exc}: {relative_path}") from exc
        except FileNotFoundError as exc:
            msg = f"spool file missing: {relative_path}"
            raise PermanentSpoolError(msg) from exc
        except OSError as exc:
            raise spool_error(exc, f"reading {relative_path}") from exc
        return path

    def discard(self, temp_path: Path) -> None:
        """Remove a temporary file that will not be kept; missing or unremovable is fine (it is not in the spool proper)."""
        with contextlib.suppress(OSError):
            temp_path.unlink(missing_ok=True)

    def leftover_incoming(self) -> list[SpoolEntry]:
        """The files in ``.incoming`` (temporary files of receives, finished or not)."""
        return [entry for path in self._files_in(self.incoming) if (entry := self._entry(path, "")) is not None]

    def stored_files(self) -> Iterator[SpoolEntry]:
        """Every file in a study folder named as the spool names its files (``<study>/<sop>-<sha256>.dcm``).

        Raises ``TransientSpoolError`` when a folder cannot be read (a folder that is gone has no files).
        """
        try:
            folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_valid_uid(p.name))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise spool_error(exc, "listing the spool") from exc
        for folder in folders:
            for path in self._files_in(folder):
                match = _STORED_NAME.fullmatch(path.name)
                if match is not None and is_valid_uid(match["sop"]) and (entry := self._entry(path, folder.name)) is not None:
                    yield entry

    def remove_if_unchanged(self, entry: SpoolEntry) -> bool:
        """Remove ``entry``'s file if its path still holds the same file as when it was listed; whether it was removed.

        A file that is gone or was replaced is not removed (False); one that cannot be removed
        (read-only, I/O error) raises ``TransientSpoolError``.
        """
        with self._rename_lock:
            try:
                if FileIdentity.of(entry.path.lstat()) != entry.identity:
                    return False
                entry.path.unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise spool_error(exc, f"removing {entry.relative_path}") from exc
        with contextlib.suppress(OSError):
            _fsync_dir(entry.path.parent)
        return True

    @staticmethod
    def _files_in(folder: Path) -> list[Path]:
        try:
            return sorted(p for p in folder.iterdir() if not p.is_symlink() and p.is_file())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise spool_error(exc, f"listing {folder.name}") from exc

    def _entry(self, path: Path, study_uid: str) -> SpoolEntry | None:
        try:
            st = path.lstat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        # ctime moves with a rename, mtime with a write: a file renamed into place keeps its old mtime.
        touched = max(st.st_mtime, st.st_ctime)
        relative = path.relative_to(self.root).as_posix()
        return SpoolEntry(path=path, relative_path=relative, study_uid=study_uid, identity=FileIdentity.of(st), touched=touched)
