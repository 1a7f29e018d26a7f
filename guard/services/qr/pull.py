"""``guard pull``: bring studies from a source into the guard by C-MOVE (destination: the guard itself).

The source sends the instances to the running guard's listener like any C-STORE from that
source, so they are made durable, forwarded and confirmed by the ordinary ingest path. The
pull itself keeps no state of its own (no schema of its own either):

- resumable: a study whose instances the ledger already holds, all confirmed and at least as
  many as the source reports, is skipped ("already present");
- idempotent: an instance received twice is recorded once (ingest is idempotent), so a pull
  killed half-way and run again ends without duplicates;
- bounded: studies come one at a time from an iterator (arguments, a file read line by line,
  or a C-FIND streamed from the source) and at most ``concurrency`` are moved at once, with at
  most as many again waiting, so 10,000 studies cost no more memory than ten.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import structlog
from pydicom import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from guard.config.settings import Settings
from guard.dicom import conversation
from guard.dicom.conversation import find_all
from guard.dicom.net import Peer, source_peer
from guard.domain import status as st
from guard.domain.errors import ConfigError, GuardError, TransientPeerError
from guard.domain.states import AuditEvent, InstanceState, Outcome
from guard.domain.uids import is_valid_uid
from guard.ledger.instances import study_facts
from guard.ledger.ledger import Ledger
from guard.ledger.query_answers import values_of

log = structlog.get_logger("guard.services.qr.pull")

_MAX_REASONS = 1000


class StudyResult(StrEnum):
    """What became of one study."""

    PULLED = "pulled"
    PRESENT = "already-present"
    FAILED = "failed"


@dataclass(frozen=True)
class PullTarget:
    """A study to pull, with the number of instances the source reports when known."""

    study_uid: str
    expected: int | None = None


@dataclass(frozen=True)
class StudyOutcome:
    """The result for one study."""

    study_uid: str
    result: StudyResult
    instances: int = 0
    reason: str = ""


@dataclass
class PullSummary:
    """Totals of a pull; the reasons of the first failures."""

    pulled: int = 0
    present: int = 0
    failed: int = 0
    instances: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    selection_error: str = ""

    @property
    def ok(self) -> bool:
        """Nothing failed, and the list of studies was read to its end."""
        return self.failed == 0 and not self.selection_error

    def add(self, outcome: StudyOutcome) -> None:
        """Count one study's outcome."""
        if outcome.result is StudyResult.PULLED:
            self.pulled += 1
        elif outcome.result is StudyResult.PRESENT:
            self.present += 1
        else:
            self.failed += 1
            if len(self.failures) < _MAX_REASONS:
                self.failures[outcome.study_uid] = outcome.reason
        self.instances += outcome.instances


class PullObserver(Protocol):
    """Progress reporting (the CLI draws bars; tests may record)."""

    def on_instances(self, count: int) -> None:
        """``count`` more instances have arrived in the guard."""

    def on_study(self, outcome: StudyOutcome) -> None:
        """A study is finished, one way or another."""


def pull_source(settings: Settings, ae_title: str | None) -> Peer:
    """The source to pull from: the one named, else the only source with an address."""
    candidates = [s for s in settings.sources if s.host]
    if ae_title is not None:
        chosen = settings.source(ae_title)
        if chosen is None or not chosen.host:
            msg = f"{ae_title} is not a configured source with a host (sources.host and sources.port say where to reach it)"
            raise ConfigError(msg)
    elif len(candidates) == 1:
        chosen = candidates[0]
    else:
        msg = f"{len(candidates)} sources have a host: name the one to pull from with --source"
        raise ConfigError(msg)
    return source_peer(chosen)


def targets_from_uids(uids: Iterable[str]) -> Iterator[PullTarget]:
    """One target per Study Instance UID (blank lines and ``#`` comments skipped, whitespace trimmed)."""
    for line in uids:
        uid = line.strip()
        if uid and not uid.startswith("#"):
            yield PullTarget(uid)


def targets_from_file(path: Path) -> Iterator[PullTarget]:
    """Study Instance UIDs from a file, one per line, read lazily."""
    with path.open(encoding="utf-8") as lines:
        yield from targets_from_uids(lines)


def targets_from_query(
    settings: Settings, source: Peer, *, date_from: str | None, date_to: str | None, modality: str | None
) -> Iterator[PullTarget]:
    """The studies a STUDY-level C-FIND of the source lists, streamed as they arrive.

    Dates are DICOM dates (YYYYMMDD); a range is ``from-to``, open on either side (PS3.4 C.2.2.2.5).
    """
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.StudyDate = f"{date_from or ''}-{date_to or ''}" if (date_from or date_to) else ""
    query.ModalitiesInStudy = modality or ""
    query.NumberOfStudyRelatedInstances = ""
    for identifier in find_all(
        settings.node.ae_title, source, query, StudyRootQueryRetrieveInformationModelFind, timeout=settings.query.timeout
    ):
        uid = str(identifier.get("StudyInstanceUID", "")).strip()
        if uid:
            yield PullTarget(uid, _count(identifier))


def _count(identifier: Dataset) -> int | None:
    value = identifier.get("NumberOfStudyRelatedInstances")
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class Puller:
    """Pulls studies from one source, a few at a time."""

    def __init__(self, settings: Settings, ledger: Ledger, source: Peer, *, concurrency: int, observer: PullObserver) -> None:
        """Pull from ``source`` into the guard named by ``settings`` (which must be running)."""
        self.settings = settings
        self.ledger = ledger
        self.source = source
        self.concurrency = max(1, concurrency)
        self.observer = observer
        self._lock = threading.Lock()

    def run(self, targets: Iterable[PullTarget], selection: dict[str, Any]) -> PullSummary:
        """Pull every target; audit ``pull.completed`` with the totals."""
        summary = PullSummary()
        started = time.monotonic()
        slots = threading.BoundedSemaphore(self.concurrency * 2)

        def finished(future: Future[StudyOutcome]) -> None:
            outcome = future.result()
            with self._lock:
                summary.add(outcome)
            self.observer.on_study(outcome)
            slots.release()

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="pull") as pool:
            try:
                for target in targets:
                    slots.acquire()
                    pool.submit(self._pull_guarded, target).add_done_callback(finished)
            except (GuardError, OSError, UnicodeDecodeError) as exc:  # the C-FIND of the source or the UID file broke off
                summary.selection_error = f"listing the studies to pull failed: {exc}"
        outcome = Outcome.SUCCESS if summary.ok else Outcome.FAILURE
        self.ledger.audit(
            AuditEvent.PULL_COMPLETED,
            outcome,
            actor="cli",
            peer_address=self.source.host,
            detail={
                "source": self.source.ae_title,
                "selection": selection,
                "pulled": summary.pulled,
                "already_present": summary.present,
                "failed": summary.failed,
                "instances": summary.instances,
                "concurrency": self.concurrency,
                "duration_s": round(time.monotonic() - started, 1),
                "first_failures": dict(list(summary.failures.items())[:20]),
                **({"error": summary.selection_error} if summary.selection_error else {}),
            },
        )
        return summary

    def _pull_guarded(self, target: PullTarget) -> StudyOutcome:
        """The boundary of one study: whatever goes wrong is that study's failure, never the run's."""
        try:
            return self._pull(target)
        except Exception as exc:  # boundary: one study's failure must not end the pull
            log.exception("pull.study_failed", action="pull.study_failed", study_uid=target.study_uid)
            return StudyOutcome(target.study_uid, StudyResult.FAILED, reason=f"unexpected error: {exc.__class__.__name__}: {exc}")

    def _pull(self, target: PullTarget) -> StudyOutcome:  # noqa: PLR0911 - one early answer per way a study can end
        uid = target.study_uid
        if not is_valid_uid(uid):
            return StudyOutcome(uid[:64], StudyResult.FAILED, reason="not a valid Study Instance UID")
        expected = target.expected
        if expected is None:
            try:
                listed, expected = self._source_count(uid)
            except GuardError as exc:
                return StudyOutcome(uid, StudyResult.FAILED, reason=f"source query failed: {exc}")
            if not listed:
                return StudyOutcome(uid, StudyResult.FAILED, reason="the source does not list this study")
        if self._already_present(uid, expected):
            return StudyOutcome(uid, StudyResult.PRESENT)
        try:
            completed, problem = self._move(uid)
        except GuardError as exc:
            return StudyOutcome(uid, StudyResult.FAILED, reason=f"C-MOVE failed: {exc}")
        if problem:
            return StudyOutcome(uid, StudyResult.FAILED, completed, problem)
        held = len(study_facts(self.ledger, uid))
        wanted = expected if expected is not None else completed
        if held < wanted:
            return StudyOutcome(uid, StudyResult.FAILED, completed, f"the guard holds {held} of {wanted} instances after the move")
        return StudyOutcome(uid, StudyResult.PULLED, completed)

    def _source_count(self, uid: str) -> tuple[bool, int | None]:
        """Whether the source lists the study, and its instance count when it gives one."""
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = uid
        query.NumberOfStudyRelatedInstances = ""
        for identifier in find_all(
            self.settings.node.ae_title, self.source, query, StudyRootQueryRetrieveInformationModelFind, timeout=self.settings.query.timeout
        ):
            return True, _count(identifier)
        return False, None

    def _already_present(self, uid: str, expected: int | None) -> bool:
        """Every instance the source has is in the guard's ledger and confirmed by the archive."""
        facts = study_facts(self.ledger, uid)
        if not facts or any(state != InstanceState.CONFIRMED.value for state in facts.values()):
            return False
        return expected is None or len(facts) >= expected

    def _move(self, uid: str) -> tuple[int, str]:
        """C-MOVE the study from the source to the guard; (completed sub-operations, problem or empty)."""
        model = StudyRootQueryRetrieveInformationModelMove
        ae = conversation.outbound_ae(self.settings.node.ae_title, self.settings.query.timeout, [model])
        ae.dimse_timeout = self.settings.query.move_idle_timeout
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = uid
        progress = _Progress(self.observer)
        with conversation.associated(ae, self.source) as assoc:
            try:
                final, identifier = conversation.drain(
                    conversation.move_responses(assoc, query, self.settings.node.ae_title, model, self.source), progress.seen
                )
            except TransientPeerError:
                return progress.completed, "the source stopped answering (association lost or timed out)"
        progress.seen(final)
        return progress.completed, _move_problem(int(final.Status), final, identifier, self.settings.node.ae_title)


@dataclass
class _Progress:
    """Completed (and warning) sub-operations of a pull's C-MOVE, passed on to the observer as they grow."""

    observer: PullObserver
    completed: int = 0

    def seen(self, response: Dataset) -> None:
        """A C-MOVE response: report the sub-operations completed since the last one."""
        now = int(response.get("NumberOfCompletedSuboperations", self.completed) or 0) + int(
            response.get("NumberOfWarningSuboperations", 0) or 0
        )
        if now > self.completed:
            self.observer.on_instances(now - self.completed)
            self.completed = now


def _move_problem(code: int, status: Dataset, identifier: Dataset | None, own_ae: str) -> str:
    """Empty for Success; otherwise what went wrong, in words an administrator can act on."""
    if code == st.SUCCESS:
        return ""
    failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
    if code == st.MOVE_DESTINATION_UNKNOWN:
        return f"the source does not know the destination {own_ae} (0xA801): add the guard to its DICOM peers"
    if code in {st.SUBOPERATIONS_COMPLETE_WITH_FAILURES, st.UNABLE_TO_PERFORM_SUBOPERATIONS}:
        uids = values_of(identifier, "FailedSOPInstanceUIDList") if identifier is not None else []
        hint = f", e.g. {uids[0]}" if uids else ""
        return f"{failed} instance(s) failed to arrive (0x{code:04X}{hint}): is guard serve running and reachable from the source?"
    answered = f"the source answered the C-MOVE with 0x{code:04X} {status.get('ErrorComment', '')}".strip()
    if 0xC000 <= code <= 0xCFFF:
        # Orthanc, for one, answers 0xC000 when it cannot reach the destination at all.
        return f"{answered}: is guard serve running and reachable from the source at the address it lists for {own_ae}?"
    return answered
