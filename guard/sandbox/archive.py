"""The built-in reference archive: a small DICOM archive for the sandbox and for tests.

It is NOT an archive for production: it keeps files in one folder, with an in-memory index
and no redundancy. ``guard serve`` runs it when no archive host is configured so that
receive, forward, confirm and status work on a fresh machine, and says so loudly.

It can prove what it holds, as a real archive does:

- C-FIND SCP, Study Root and Patient Root (see ``guard.sandbox.index`` for matching);
- C-GET SCP, Study Root at IMAGE level (the instances named by SOP Instance UID), sending each
  stored file as it was received, so that the guard's byte verification can check it;
- Storage Commitment Push Model SCP (PS3.4 Annex J), behaving like Orthanc: the N-ACTION is
  answered at once, the N-EVENT-REPORT comes later on a **new association** that the archive
  opens to the requester's address (``requesters``), proposing the SCP role by role
  selection. A requester whose AE title is not in ``requesters`` gets an A-ABORT on the
  N-ACTION (as Orthanc does for an AE missing from ``DicomModalities``). A report that
  cannot be delivered is not retried (Orthanc does not retry either): it is recorded in
  ``reports_undelivered`` and counted by ``reports_failed``. Whether an instance is held is
  decided when the report is built, not when the N-ACTION arrives.

Tests use it as a peer whose faults (``Faults``) can be switched on while it runs: refuse
associations, abort them, answer slowly, answer failure statuses, answer Success and not
keep some or all instances, report commitment falsely or not at all. ``forget`` deletes an
instance, as an archive that loses data.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import structlog
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from guard.dicom.commitment import ACTION_REQUEST_COMMIT, COMMITMENT_INSTANCE_UID, deliver_report
from guard.dicom.net import NODELAY_HANDLER, Peer, start_quiet_server
from guard.domain import status as st
from guard.domain.errors import PeerError
from guard.domain.uids import is_valid_uid
from guard.sandbox.index import LEVEL_KEYS, Index

log = structlog.get_logger("guard.sandbox.archive")

_REJECTED_TRANSIENT = 0x02
_SERVICE_PROVIDER_PRESENTATION = 0x03
_TEMPORARY_CONGESTION = 0x01

__all__ = ["COMMITMENT_INSTANCE_UID", "CommitReport", "Faults", "ReferenceArchive"]


@dataclass
class Faults:
    """Faults to inject; change them at any time, they apply to the next request.

    ``refuse``, ``abort`` and ``delay`` apply to every service. ``status`` answers C-STORE,
    ``find_status`` C-FIND and ``commit_status`` the N-ACTION with that failure status
    (no report follows). ``drop`` keeps nothing, ``drop_every=N`` does not keep the Nth,
    2Nth, ... instance received (counted by ``received_count``); both answer Success.
    ``commit_lie`` reports every referenced instance committed, held or not;
    ``commit_silent`` answers the N-ACTION but never reports; ``commit_delay`` is the
    time between the N-ACTION and the report.
    """

    refuse: bool = False
    abort: bool = False
    delay: float = 0.0
    status: int | None = None
    drop: bool = False
    drop_every: int = 0
    find_status: int | None = None
    commit_status: int | None = None
    commit_lie: bool = False
    commit_silent: bool = False
    commit_delay: float = 0.05

    def clear(self) -> None:
        """Behave correctly again."""
        for spec in fields(self):
            setattr(self, spec.name, spec.default)


@dataclass(frozen=True)
class CommitReport:
    """A Storage Commitment report the archive sent, or tried to send."""

    requester: str
    transaction_uid: str
    succeeded: tuple[str, ...]
    failed: tuple[str, ...]
    #: The requester's answer to the N-EVENT-REPORT; None when it was not delivered.
    status: int | None = None
    error: str | None = None


@dataclass
class _Pending:
    """A report waiting for its ``commit_delay``."""

    requester: str
    address: tuple[str, int]
    transaction_uid: str
    references: list[tuple[str, str]]
    delay: float
    lie: bool
    thread: threading.Thread | None = field(default=None, repr=False)


class ReferenceArchive:
    """A storage, query and commitment SCP that keeps what it receives in ``directory``."""

    #: Seconds allowed to connect, negotiate and get the answer when delivering a report.
    report_timeout: float = 10.0

    def __init__(
        self,
        directory: Path,
        *,
        ae_title: str = "ARCHIVE",
        bind: str = "127.0.0.1",
        port: int = 0,
        requesters: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        """Listen on ``bind:port`` (0 picks a free port) as ``ae_title``.

        ``requesters`` maps the AE title of each peer allowed to ask for Storage Commitment
        to the (host, port) where it accepts the report.
        """
        self.directory = directory
        self.bind = bind
        self.requested_port = port
        self.faults = Faults()
        self.requesters: dict[str, tuple[str, int]] = dict(requesters or {})
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_pdu_size = 262144
        for cx in AllStoragePresentationContexts:
            # The SCU role too: a C-GET requester takes the instances as Storage SCP (PS3.4 C.4.3, role selection).
            self.ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        self.ae.add_supported_context(Verification)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        self.ae.add_supported_context(StorageCommitmentPushModel)
        self.server: ThreadedAssociationServer | None = None
        self._lock = threading.Lock()
        self._index = Index()
        self._stopping = threading.Event()
        self._pending: list[_Pending] = []
        self.received_count = 0
        #: Reports delivered (the requester answered), in the order they were sent.
        self.reports_sent: list[CommitReport] = []
        #: Reports that could not be delivered (not retried).
        self.reports_undelivered: list[CommitReport] = []
        #: AE titles whose N-ACTION was aborted because they are not in ``requesters``.
        self.unknown_requesters: list[str] = []

    @property
    def ae_title(self) -> str:
        """The archive's AE title."""
        return str(self.ae.ae_title)

    @property
    def port(self) -> int:
        """The port it listens on."""
        if self.server is None:
            return self.requested_port
        return int(self.server.server_address[1])

    @property
    def reports_failed(self) -> int:
        """How many commitment reports could not be delivered."""
        return len(self.reports_undelivered)

    def add_requester(self, ae_title: str, host: str, port: int) -> None:
        """Allow ``ae_title`` to ask for Storage Commitment; its report goes to ``host:port``."""
        with self._lock:
            self.requesters[ae_title] = (host, port)

    def start(self) -> ReferenceArchive:
        """Index the folder, then open the port."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._index.rebuild(self.directory)
        self._stopping.clear()
        handlers: list[Any] = [
            NODELAY_HANDLER,
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda _e: st.SUCCESS),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_N_ACTION, self._on_n_action),
        ]
        self.server = start_quiet_server(self.ae, (self.bind, self.requested_port), handlers, name="reference-archive")
        return self

    def stop(self) -> None:
        """Close the port and abort associations in flight (an archive going down).

        Reports still waiting for their delay are dropped and recorded as undelivered.
        """
        self._stopping.set()
        server, self.server = self.server, None
        if server is not None:
            self.requested_port = int(server.server_address[1])
            server.shutdown()
            for assoc in server.active_associations:
                assoc.abort()
        with self._lock:
            pending, self._pending = self._pending, []
        for job in pending:
            if job.thread is not None:
                job.thread.join(self.report_timeout * 2)

    def holds(self, sop_instance_uid: str) -> bool:
        """Whether the archive keeps this instance."""
        return is_valid_uid(sop_instance_uid) and (self.directory / f"{sop_instance_uid}.dcm").is_file()

    def held_uids(self) -> set[str]:
        """Every SOP Instance UID the archive keeps."""
        return {p.stem for p in self.directory.glob("*.dcm")}

    def forget(self, sop_instance_uid: str) -> bool:
        """Delete a held instance, file and index entry (an archive that loses data); False if not held."""
        if not is_valid_uid(sop_instance_uid):
            return False
        self._index.remove(sop_instance_uid)
        try:
            (self.directory / f"{sop_instance_uid}.dcm").unlink()
        except FileNotFoundError:
            return False
        return True

    # Association and C-STORE

    def _on_requested(self, event: Any) -> None:
        if self.faults.refuse:
            event.assoc.acse.send_reject(_REJECTED_TRANSIENT, _SERVICE_PROVIDER_PRESENTATION, _TEMPORARY_CONGESTION)
            event.assoc.kill()

    def _on_store(self, event: Any) -> Dataset | int:
        faults = self.faults
        if faults.delay:
            time.sleep(faults.delay)
        if faults.abort:
            event.assoc.abort()
            return st.PROCESSING_FAILURE
        if faults.status is not None:
            return faults.status
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        if not is_valid_uid(sop_uid):
            return st.CANNOT_UNDERSTAND
        with self._lock:
            self.received_count += 1
            count = self.received_count
        if faults.drop or (faults.drop_every > 0 and count % faults.drop_every == 0):
            return st.SUCCESS
        target = self.directory / f"{sop_uid}.dcm"
        try:
            path = getattr(event.request, "_dataset_path", None)
            if path is not None:
                source = path[0] if isinstance(path, tuple) else path
                shutil.copyfile(source, target)
            else:
                ds = event.dataset
                ds.file_meta = event.file_meta
                ds.save_as(target, enforce_file_format=True)
        except OSError:
            return st.OUT_OF_RESOURCES
        if not self._index.add(target):
            log.warning("refarchive.unindexed", action="refarchive.unindexed", sop_instance_uid=sop_uid)
        return st.SUCCESS

    # C-FIND

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        faults = self.faults
        if faults.delay:
            time.sleep(faults.delay)
        if faults.abort:
            event.assoc.abort()
            return
        if faults.find_status is not None:
            yield faults.find_status, None
            return
        try:
            query = event.identifier
            level = str(query.get("QueryRetrieveLevel", ""))
        except (AttributeError, KeyError, TypeError, ValueError):
            yield st.CANNOT_UNDERSTAND, None
            return
        study_root = str(event.request.AffectedSOPClassUID) == str(StudyRootQueryRetrieveInformationModelFind)
        if level not in LEVEL_KEYS or (study_root and level == "PATIENT"):
            yield st.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, None
            return
        for identifier in self._index.search(query, level):
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            yield st.PENDING, identifier

    # C-GET

    def _on_get(self, event: Any) -> Iterator[int | tuple[int, Dataset | None]]:
        """Send back the held instances the identifier names (IMAGE level), each file as stored.

        pynetdicom's C-GET SCP sends only a ``Dataset``: each file is read without decoding its
        values, so the elements are written back on the wire as they were stored.
        """
        if self.faults.abort:
            event.assoc.abort()
            return
        try:
            named = event.identifier.get("SOPInstanceUID", "")
        except (AttributeError, KeyError, TypeError, ValueError):
            yield 0
            yield st.CANNOT_UNDERSTAND, None
            return
        uids = [named] if isinstance(named, str) else [str(u) for u in named]
        held = [self.directory / f"{uid}.dcm" for uid in uids if self.holds(uid)]
        yield len(held)
        for path in held:
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            try:
                stored = dcmread(path)
            except (OSError, InvalidDicomError) as exc:  # forgotten meanwhile, or damaged by a test: not returned
                log.warning("refarchive.unreadable", action="refarchive.unreadable", path=path.name, error=str(exc))
                continue
            yield st.PENDING, stored

    # Storage Commitment

    def _on_n_action(self, event: Any) -> tuple[int, Dataset | None]:
        faults = self.faults
        if faults.delay:
            time.sleep(faults.delay)
        requester = str(event.assoc.requestor.ae_title).strip()
        with self._lock:
            address = self.requesters.get(requester)
        if faults.abort or address is None:
            if address is None:
                self.unknown_requesters.append(requester)
                log.warning("refarchive.unknown_requester", action="refarchive.unknown_requester", requester=requester)
            event.assoc.abort()
            return st.REFUSED_NOT_AUTHORIZED, None
        if faults.commit_status is not None:
            return faults.commit_status, None
        request = _commit_request(event)
        if isinstance(request, int):
            return request, None
        transaction_uid, references = request
        if not faults.commit_silent:
            job = _Pending(requester, address, transaction_uid, references, max(0.0, faults.commit_delay), faults.commit_lie)
            job.thread = threading.Thread(target=self._report_later, args=(job,), name=f"refarchive-report-{transaction_uid}", daemon=True)
            with self._lock:
                self._pending.append(job)
            job.thread.start()
        return st.SUCCESS, None

    def _report_later(self, job: _Pending) -> None:
        if self._stopping.wait(job.delay):
            self._record(job, (), (), None, "archive stopped before the report was due")
            return
        successes: list[tuple[str, str]] = []
        failures: list[tuple[str, str, int]] = []
        for sop_class, sop_uid in job.references:
            held = self.holds(sop_uid)
            held_class = self._index.sop_class(sop_uid) if held else None
            if job.lie or (held and held_class in {None, sop_class}):
                successes.append((sop_class, sop_uid))
            else:
                reason = st.CLASS_INSTANCE_CONFLICT if held else st.NO_SUCH_OBJECT_INSTANCE
                failures.append((sop_class, sop_uid, reason))
        succeeded = tuple(uid for _, uid in successes)
        failed = tuple(uid for _, uid, _ in failures)
        status, error = self._deliver(job, successes, failures)
        self._record(job, succeeded, failed, status, error)

    def _deliver(
        self, job: _Pending, successes: list[tuple[str, str]], failures: list[tuple[str, str, int]]
    ) -> tuple[int | None, str | None]:
        """Send the N-EVENT-REPORT on a new association, as SCP by role selection; (the requester's answer, error)."""
        host, port = job.address
        try:
            deliver_report(
                self.ae_title,
                Peer(job.requester, host, port),
                transaction_uid=job.transaction_uid,
                successes=successes,
                failures=failures,
                timeout=self.report_timeout,
            )
        except PeerError as exc:
            return exc.status, None if exc.status is not None else str(exc)
        except Exception as exc:  # noqa: BLE001 - whatever pynetdicom raises, the outcome is recorded, never lost with the thread
            return None, f"{type(exc).__name__}: {exc}"
        return st.SUCCESS, None

    def _record(self, job: _Pending, succeeded: tuple[str, ...], failed: tuple[str, ...], status: int | None, error: str | None) -> None:
        report = CommitReport(job.requester, job.transaction_uid, succeeded, failed, status, error)
        with self._lock:
            (self.reports_sent if status is not None else self.reports_undelivered).append(report)
            if job in self._pending:
                self._pending.remove(job)
        if status is None:
            log.warning(
                "refarchive.report_undelivered", action="refarchive.report_undelivered", transaction_uid=job.transaction_uid, error=error
            )


def _commit_request(event: Any) -> tuple[str, list[tuple[str, str]]] | int:
    """The Transaction UID and (SOP Class, SOP Instance) references of an N-ACTION, or the status refusing it."""
    if event.action_type != ACTION_REQUEST_COMMIT:
        return st.NO_SUCH_ACTION_TYPE
    if str(event.request.RequestedSOPInstanceUID) != COMMITMENT_INSTANCE_UID:
        return st.INVALID_OBJECT_INSTANCE
    try:
        info = event.action_information
        transaction_uid = str(info.TransactionUID)
        references = [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)) for i in info.ReferencedSOPSequence]
    except (AttributeError, KeyError, TypeError, ValueError):
        return st.INVALID_ARGUMENT_VALUE
    if not is_valid_uid(transaction_uid) or not references:
        return st.INVALID_ARGUMENT_VALUE
    return transaction_uid, references
