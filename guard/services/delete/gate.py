"""The delete gate service: gather the facts and live evidence, decide, audit, carry out.

Every channel (HTTP, CLI, IOCM rejection notes) goes through ``DeleteGate.request``.
Two requests for the same study are serialised by a per-study lock (in this process, and
across every node of a PostgreSQL ledger by ``Ledger.study_lock``), so one decision carries
the delete out and the others see its result.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from guard.config.settings import Settings
from guard.dicom.commitment import find_study_instances
from guard.dicom.net import source_peer
from guard.domain.decision import Decision, LiveEvidence, StudyFacts, decide_delete
from guard.domain.errors import PeerError
from guard.domain.states import AuditEvent, Outcome
from guard.ledger.byte_checks import flagged_in_study
from guard.ledger.instances import mark_study_deleted, study_deleted_at, study_facts
from guard.ledger.ledger import Ledger
from guard.services.archive import Archive, open_archive
from guard.services.verify.choose import build_verifier
from guard.services.verify.verifier import ByteVerifier, SampleOutcome
from guard.spool import Spool
from guard.web.backends import Backend, BackendError


@dataclass(frozen=True)
class DeleteOutcome:
    """The decision, and whether the backend carried a permitted delete out."""

    decision: Decision
    carried_out: bool = False
    backend_error: str | None = None


class DeleteGate:
    """Decides delete requests for every channel."""

    def __init__(
        self, settings: Settings, ledger: Ledger, backend: Backend, archive: Archive | None = None, verifier: ByteVerifier | None = None
    ) -> None:
        """Decide with ``settings.delete``, asking ``archive`` (default: the configured one); carry out with ``backend``.

        The delete-time byte sample (``verify.delete_sample``) is taken with ``verifier``; without
        one, with a verifier of its own (C-GET only: C-MOVE needs the listener of ``guard serve``).
        """
        self.settings = settings
        self.archive = archive or open_archive(settings)
        self.ledger = ledger
        self.backend = backend
        self.verifier = verifier or build_verifier(settings, ledger, Spool(settings.spool_dir), registry=None)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, study_uid: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(study_uid, threading.Lock())

    def evaluate(self, study_uid: str) -> Decision:
        """The decision as it would be now, without auditing or carrying anything out."""
        facts = StudyFacts(study_uid, study_facts(self.ledger, study_uid))
        live = self._live_evidence(study_uid, facts)
        facts = StudyFacts(study_uid, facts.states, bytes_differ=flagged_in_study(self.ledger, study_uid))
        return decide_delete(
            facts,
            live,
            reverify=self.settings.delete.reverify,
            source_check=self.settings.delete.source_check,
            bytes_sample=self.settings.verify.delete_sample > 0,
        )

    def _live_evidence(self, study_uid: str, facts: StudyFacts) -> LiveEvidence:
        """Ask the archive and the source(s) now; an error is evidence of doubt, never of absence."""
        timeout = self.settings.forward.timeout
        archive_listed: set[str] | None = None
        archive_error = source_error = None
        source_listed: set[str] | None = None
        if self.settings.delete.reverify and facts.states:
            try:
                archive_listed = self.archive.study_instances(study_uid)
            except PeerError as exc:
                archive_error = str(exc)
        if self.settings.delete.source_check and facts.states:
            source_listed, source_error = self._ask_sources(study_uid, timeout)
        sample = SampleOutcome(checked=None)
        if self.settings.verify.delete_sample > 0 and facts.states:
            sample = self.verifier.at_delete(study_uid)
        return LiveEvidence(
            archive_listed=archive_listed,
            archive_error=archive_error,
            source_listed=source_listed,
            source_error=source_error,
            bytes_checked=sample.checked,
            bytes_differ=sample.not_matching,
            bytes_error=sample.error,
        )

    def _ask_sources(self, study_uid: str, timeout: float) -> tuple[set[str] | None, str | None]:
        """Union of what every configured source with an address lists for the study."""
        listed: set[str] = set()
        asked = 0
        for source in self.settings.sources:
            if not source.host:
                continue
            try:
                listed |= find_study_instances(self.settings.node.ae_title, source_peer(source), study_uid, timeout=timeout)
            except PeerError as exc:
                return None, f"{source.ae_title}: {exc}"
            asked += 1
        if not asked:
            return None, "no source with a host and port is configured to ask"
        return listed, None

    def request(
        self,
        study_uid: str,
        *,
        channel: str,
        requester: str,
        peer_address: str | None,
        reason: str | None,
        carry_out: bool = True,
    ) -> DeleteOutcome:
        """A delete request: audit it, decide, audit the decision, and carry a permitted one out.

        ``carry_out=False`` is for channels where someone downstream acts on the permission
        (an IOCM rejection note is forwarded to the archive instead of deleting at the source).
        """
        with self._lock(study_uid), self.ledger.study_lock(study_uid):
            who: dict[str, Any] = {"actor": requester, "peer_address": peer_address, "study_uid": study_uid}
            self.ledger.audit(AuditEvent.DELETE_REQUESTED, detail={"channel": channel, "reason": reason}, **who)
            deleted_at = study_deleted_at(self.ledger, study_uid)
            if deleted_at is not None and carry_out:
                # A concurrent or repeated request: the delete was already carried out and
                # nothing of the study has arrived since; answer the same, do nothing twice.
                sentence = f"Permitted: already carried out at {deleted_at.isoformat()}."
                self.ledger.audit(
                    AuditEvent.DELETE_PERMITTED, detail={"channel": channel, "already_deleted": deleted_at.isoformat()}, **who
                )
                return DeleteOutcome(Decision(study_uid, permitted=True, sentence=sentence), carried_out=True)
            decision = self.evaluate(study_uid)
            detail = {
                "channel": channel,
                "reasons": [r.value for r in decision.reasons],
                "sentence": decision.sentence,
                "evidence": decision.evidence,
            }
            if not decision.permitted:
                self.ledger.audit(AuditEvent.DELETE_REFUSED, Outcome.REFUSED, detail=detail, **who)
                return DeleteOutcome(decision)
            if not carry_out:
                self.ledger.audit(AuditEvent.DELETE_PERMITTED, detail=detail, **who)
                return DeleteOutcome(decision)
            try:
                self.backend.delete(study_uid)
            except BackendError as exc:
                detail["backend_error"] = str(exc)
                self.ledger.audit(AuditEvent.DELETE_PERMITTED, Outcome.FAILURE, detail=detail, **who)
                return DeleteOutcome(decision, carried_out=False, backend_error=str(exc))
            detail["backend"] = self.backend.name
            with self.ledger.transaction() as tx:
                mark_study_deleted(tx, study_uid)
                tx.audit(AuditEvent.DELETE_PERMITTED, detail=detail, **who)
            return DeleteOutcome(decision, carried_out=True)
