"""Process-wide state, owned here and nowhere else.

pynetdicom is configured through module globals and structlog through its global
configuration; TLS contexts (``guard.runtime.tls``) and the Prometheus metrics
(``guard.runtime.metrics``) are process-wide too. This package sets and holds all of them, so
that the rest of the code never touches globals:

- received data sets stream to a temporary file (``STORE_RECV_CHUNKED_DATASET``) in the
  spool's ``.incoming`` folder (kept here, not in ``tempfile.tempdir``, so nothing else in the
  process writes its temporary files into the spool), on the same file system as the spool, so it can be renamed
  into place without a copy;
- instances are sent from the spool file without loading them (``STORE_SEND_CHUNKED_DATASET``);
- the temporary file pynetdicom writes into is an ``IncomingFile``: when the disk is full
  or read-only, the write error is remembered instead of killing the association, so the
  C-STORE handler can answer 0xA700 (Out of Resources) and audit it (invariant 1); a data set
  over ``node.max_dataset_size`` is treated the same way (its partial file removed at once);
- every ``IncomingFile`` is registered with the association that receives it until that
  association has ended: ``release_incoming`` then closes and removes whatever it did not hand
  over (an abort mid-data-set, a release, a command sent twice, a message never served) and
  forgets its receive errors; one its handler handed over is forgotten at once
  (``forget_handed_over``); ``incoming_in_use`` names the files of receives in progress, so
  that the spool sweep leaves them alone;
- pynetdicom's own logging is quiet; the guard's audit and log lines are JSON on stdout;
- once a process has started, what it holds for its lifetime is frozen out of the garbage
  collector's scans (``freeze_heap``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

import structlog
from pynetdicom import _config as pynetdicom_config
from pynetdicom import dimse_messages

from guard.domain.digest import DatasetDigest, NotPart10Error
from guard.domain.redaction import LogScrubber
from guard.runtime import commands, file_meta, negotiation, reactor, uid_checks

_receive_errors: dict[str, ReceiveError] = {}
_receive_errors_lock = threading.Lock()
#: Every incoming file created and not yet released, by path.
_incoming: dict[str, IncomingFile] = {}
_incoming_lock = threading.Lock()
#: Largest data set written into an ``IncomingFile`` (``node.max_dataset_size``; 0: no limit).
_max_dataset_size = 0
#: Where ``IncomingFile`` creates its files (the spool's ``.incoming`` folder); None: the system's temporary folder.
_incoming_dir: Path | None = None


@dataclass(frozen=True)
class ReceiveError:
    """Why a received data set was not kept: ``spool-unavailable`` (the disk) or ``dataset-too-large``."""

    reason: str
    message: str


def held_incoming() -> int:
    """How many incoming files this process has registered (for tests and diagnostics)."""
    with _incoming_lock:
        return len(_incoming)


def forget_handed_over(path: str | Path) -> None:
    """Forget the incoming file at ``path`` once its C-STORE handler has handed it over (renamed it, or removed it).

    Without this an association kept every incoming file it received registered until it ended
    or a spool sweep ran (in the main process only): memory that grew with the instances sent on
    one association, without bound in a listener process. A file still at its path (not handed
    over) stays registered: ``release_incoming`` removes it when the association ends.
    """
    name = str(path)
    if Path(name).exists():
        return
    # The data set is complete (the handler runs once it is); pynetdicom closes the file after the handler.
    with _incoming_lock:
        _incoming.pop(name, None)


def held_receive_errors() -> int:
    """How many receive errors are waiting to be taken (for tests and diagnostics)."""
    with _receive_errors_lock:
        return len(_receive_errors)


def take_receive_error(path: str | Path) -> ReceiveError | None:
    """The error met while receiving into ``path``, if any (forgotten once taken)."""
    with _receive_errors_lock:
        return _receive_errors.pop(str(path), None)


def streamed_digest(path: str | Path) -> str | None:
    """The data-set digest (``guard.domain.digest``) of what streamed into ``path``, taken as it was written.

    None when ``path`` is not an incoming file of this process, its receive failed, or it is not a
    Part 10 file: the caller then reads the file back (or refuses it).
    """
    with _incoming_lock:
        incoming = _incoming.get(str(path))
    return None if incoming is None else incoming.digest()


class IncomingFile:
    """The temporary file a received data set streams into, tolerant of a failing disk.

    pynetdicom writes every P-DATA fragment straight into this object. A write that fails
    (disk full, read-only file system) must not abort the association: the error is kept,
    the partial file removed to give the space back, the rest of the data set discarded, and
    the handler answers a failure status.
    """

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        """Open a new temporary file in the spool's incoming folder, registered with the association receiving it."""
        self._fh: IO[bytes] | None = None
        # Hashed as it streams: a retrieved copy is never read back, a received one not twice.
        self._digest: DatasetDigest | None = DatasetDigest()
        self._written = 0
        self._limit = _max_dataset_size
        # pynetdicom decodes P-DATA on the association's DUL thread, which knows its association.
        thread = threading.current_thread()
        self.owner: Any = getattr(thread, "assoc", thread)
        try:
            self._fh = tempfile.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm", dir=_incoming_dir)  # noqa: SIM115 - closed by pynetdicom
            self.name = self._fh.name
        except OSError as exc:
            self.name = str(Path(_incoming_dir or tempfile.gettempdir()) / f"unwritable-{uuid.uuid4().hex}.dcm")
            self._fail(exc)
        with _incoming_lock:
            _incoming[self.name] = self

    @property
    def file(self) -> IncomingFile:
        """The object pynetdicom flushes through ``.file``, as on a NamedTemporaryFile."""
        return self

    def write(self, data: bytes) -> int:
        """Write a fragment, or swallow it once writing has failed or the data set is over the size limit."""
        self._written += len(data)
        if self._fh is not None and self._limit and self._written > self._limit:
            self._fail_with(ReceiveError("dataset-too-large", f"data set larger than the limit of {self._limit} bytes"))
        if self._fh is not None:
            try:
                written = self._fh.write(data)
            except OSError as exc:
                self._fail(exc)
            else:
                self._hash(data)
                return written
        return len(data)

    def _hash(self, data: bytes) -> None:
        if self._digest is not None:
            try:
                self._digest.update(data)
            except NotPart10Error:
                self._digest = None  # not hashable as Part 10: the reader decides what that means

    def digest(self) -> str | None:
        """The data set's digest so far (complete once pynetdicom has written the last fragment); None if unknown."""
        if self._digest is None or self.name in _receive_errors:
            return None
        try:
            return self._digest.hexdigest()
        except NotPart10Error:
            return None

    def flush(self) -> None:
        """Flush to the OS (not fsync: the spool does that once the data set is complete)."""
        if self._fh is not None:
            try:
                self._fh.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError as exc:
                self._fail(exc)

    @property
    def closed(self) -> bool:
        """Whether nothing more will be written (closed, or given up after an error)."""
        return self._fh is None or self._fh.closed

    def discard(self) -> bool:
        """Close and remove the file; whether there was one to remove."""
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
        try:
            Path(self.name).unlink()
        except OSError:
            return False
        return True

    def _fail(self, exc: OSError) -> None:
        self._fail_with(ReceiveError("spool-unavailable", f"receiving failed: {exc.strerror or exc}"))

    def _fail_with(self, error: ReceiveError) -> None:
        """Remember ``error``, remove the partial file to give the space back, discard the rest."""
        with _receive_errors_lock:
            _receive_errors[self.name] = error
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()
        with contextlib.suppress(OSError):
            Path(self.name).unlink()


def release_incoming(owner: object) -> list[Path]:
    """Close and remove the incoming files ``owner`` (an ended association) did not hand over; the paths removed.

    Called once the association's thread has ended, so no handler is still reading one of them;
    a file its handler renamed into the spool or discarded is already gone and only forgotten.
    """
    with _incoming_lock:
        files = [f for f in _incoming.values() if f.owner is owner]
        for incoming in files:
            del _incoming[incoming.name]
    with _receive_errors_lock:
        for incoming in files:
            _receive_errors.pop(incoming.name, None)
    return [Path(f.name) for f in files if f.discard()]


def incoming_in_use() -> frozenset[Path]:
    """Incoming files that a receive in progress holds (their association is alive); those of ended associations are released first."""
    with _incoming_lock:
        ended = {id(f.owner): f.owner for f in _incoming.values() if not _alive(f.owner)}
    for owner in ended.values():
        release_incoming(owner)
    with _incoming_lock:
        for name in [n for n, f in _incoming.items() if f.closed and not Path(n).exists()]:
            del _incoming[name]  # handed over (renamed into the spool, or discarded); its receive error may still be taken
        return frozenset(Path(name) for name in _incoming)


def _alive(owner: object) -> bool:
    """Whether the association (or thread) that owns an incoming file is still running."""
    is_alive = getattr(owner, "is_alive", None)
    return bool(is_alive()) if callable(is_alive) else True


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None, *, redact_patient_data: bool = False) -> None:
    """JSON lines, one object per event.

    On stdout for ``guard serve`` (container convention); on ``stream`` (stderr) for the other
    commands, whose stdout is their answer. Secrets are always masked; with
    ``redact_patient_data`` patient identifiers are left out of the lines (``guard.domain.redaction``);
    the audit table keeps them.
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            LogScrubber(patient_data=redact_patient_data),
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


def configure_dicom(incoming_dir: Path, max_dataset_size: int = 0) -> None:
    """Make pynetdicom stream data sets to and from disk, receiving into ``incoming_dir``.

    A received data set over ``max_dataset_size`` bytes (0: no limit) is not kept: its partial
    file is removed and the C-STORE handler answers 0xA700.
    """
    global _max_dataset_size, _incoming_dir  # noqa: PLW0603 - this module owns the process-wide state
    _max_dataset_size = max_dataset_size
    _incoming_dir = incoming_dir
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    # Hostile or broken UIDs must reach our handler (which answers a failure status and
    # audits) rather than be rejected silently inside the library.
    pynetdicom_config.ENFORCE_UID_CONFORMANCE = False
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    # pynetdicom formats every C-FIND/C-MOVE/C-GET identifier line by line for its log even
    # when nothing would print it: confirmations and relayed queries read hundreds of them.
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    dimse_messages.NamedTemporaryFile = IncomingFile  # type: ignore[attr-defined,assignment]
    # Association threads that wait for events instead of waking every millisecond, negotiation
    # against supported contexts prepared once, UIDs found valid not checked again, and command
    # sets and the File Meta of received files written directly instead of through pydicom's
    # general writer.
    reactor.install()
    negotiation.install()
    uid_checks.install()
    commands.install()
    file_meta.install()


def freeze_heap() -> None:
    """Leave everything alive now out of the garbage collector's scans (``gc.freeze``), for a process that has started.

    A started guard holds a few hundred thousand objects for its lifetime (modules, the settings,
    the SQLAlchemy and pydicom tables, the supported presentation contexts). Every full
    collection walks all of them, and the objects each association leaves behind trigger one
    every couple of hundred associations: about 70 ms each, paid by associations that have no use
    for it. Frozen, they are never scanned (nor freed, which they would not be anyway); what is
    allocated afterwards is collected as before. Called once, by the command that runs the process.
    """
    gc.collect()
    gc.freeze()
