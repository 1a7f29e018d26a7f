"""C-FIND relay: a source's query goes to the archive, each match comes back as it arrives.

The handler is a generator (pynetdicom's protocol for EVT_C_FIND): every pending answer of the
archive is yielded at once, never collected first, so the requester sees the first match
while the archive is still searching. A C-CANCEL from the requester is passed on to the
archive (PS3.4 C.4.1.2.3) and answered Cancel (0xFE00).

Retrieve AE Title (0008,0054) in the answers names the guard, not the archive: the requester
reaches the archive's data only through the guard, so that is where it must retrieve from.

When the archive cannot be reached and ``query.ledger_fallback`` is on, the ledger answers
(what the guard has received); the audit record says ``answered_by: ledger``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import structlog
from pydicom import Dataset

from guard.config.settings import Settings
from guard.dicom import conversation
from guard.dicom.net import Peer, archive_peer, open_association
from guard.domain import status as st
from guard.domain.errors import GuardError, TransientPeerError
from guard.domain.states import AuditEvent, Outcome
from guard.ledger.ledger import Ledger
from guard.ledger.query_answers import answer_from_ledger
from guard.services.qr.common import RelayRequest, read_request, status_dataset

log = structlog.get_logger("guard.services.qr.find")

FindYield = tuple[int | Dataset, Dataset | None]
_CANCEL_POLL = 0.05


class FindRelay:
    """The C-FIND SCP side of the relay."""

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        """Relay to the archive named by ``settings``; audit into ``ledger``."""
        self.settings = settings
        self.ledger = ledger

    def on_find(self, event: Any) -> Iterator[FindYield]:
        """EVT_C_FIND handler: relay the query and stream the archive's answers back."""
        request = read_request(event)
        started = time.monotonic()
        if request.identifier is None or not request.level:
            self._audit(request, Outcome.FAILURE, started, matches=0, status=st.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, error="bad identifier")
            yield status_dataset(st.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "identifier cannot be decoded or has no level"), None
            return
        archive = archive_peer(self.settings.archive)
        try:
            ae = conversation.outbound_ae(self.settings.node.ae_title, self.settings.query.timeout, [request.model])
            assoc = open_association(ae, archive, [])
        except GuardError as exc:
            yield from self._archive_unreachable(event, request, started, str(exc))
            return
        try:
            matches, final, error, cancelled = yield from self._stream(event, request, assoc, archive)
        except GeneratorExit:  # the requester's association ended while answers were streaming
            self._audit(request, Outcome.FAILURE, started, status=st.UNABLE_TO_PROCESS, error="requester association ended")
            raise
        code = int(final.Status)
        outcome = Outcome.SUCCESS if code in {st.SUCCESS, st.CANCEL} else Outcome.FAILURE
        self._audit(request, outcome, started, matches=matches, status=code, error=error, cancelled=cancelled)
        if code != st.SUCCESS:
            yield final, None

    def _stream(
        self, event: Any, request: RelayRequest, assoc: Any, archive: Peer
    ) -> Generator[FindYield, None, tuple[int, Dataset, str, bool]]:
        """Yield the archive's matches as they come; return (matches, final status, error, cancelled).

        A C-CANCEL is watched for on its own thread, so it reaches the archive even while the
        archive is still searching (no answer to react to yet).
        """
        matches, final, error = 0, status_dataset(st.SUCCESS), ""
        watcher = _CancelWatcher(event, assoc, request.model)
        responses = conversation.find_responses(assoc, request.identifier or Dataset(), request.model, archive)
        try:
            while not watcher.cancelled.is_set():
                code, identifier = next(responses)
                if watcher.cancelled.is_set():
                    break
                matches += 1
                yield code, self._as_answer(identifier)
        except StopIteration as end:
            code = int(end.value.Status)
            if code != st.SUCCESS:
                error = f"archive answered 0x{code:04X}"
                final = status_dataset(code, conversation.comment_of(end.value) or error)
        except TransientPeerError:
            error = "archive association lost or timed out"
            final = status_dataset(st.UNABLE_TO_PROCESS, error)
        finally:
            responses.close()
            watcher.stop()
            if watcher.cancelled.is_set() and assoc.is_established:
                assoc.abort()
            elif assoc.is_established:
                assoc.release()
        if watcher.cancelled.is_set():
            final, error = status_dataset(st.CANCEL), ""
        return matches, final, error, watcher.cancelled.is_set()

    def _as_answer(self, identifier: Dataset) -> Dataset:
        """The archive's identifier, with the guard as the place to retrieve from."""
        if "RetrieveAETitle" in identifier:
            identifier.RetrieveAETitle = self.settings.node.ae_title
        return identifier

    def _archive_unreachable(self, event: Any, request: RelayRequest, started: float, error: str) -> Iterator[FindYield]:
        """No archive: answer from the ledger when allowed, else Out of Resources (try again later)."""
        if not self.settings.query.ledger_fallback or request.identifier is None:
            self._audit(request, Outcome.FAILURE, started, matches=0, status=st.OUT_OF_RESOURCES, error=error)
            yield status_dataset(st.OUT_OF_RESOURCES, "archive unreachable"), None
            return
        matches, cancelled = 0, False
        for identifier in answer_from_ledger(self.ledger, request.identifier, retrieve_ae=self.settings.node.ae_title):
            if event.is_cancelled:
                cancelled = True
                break
            matches += 1
            yield st.PENDING, identifier
        status = st.CANCEL if cancelled else st.SUCCESS
        self._audit(
            request, Outcome.SUCCESS, started, matches=matches, status=status, error=error, answered_by="ledger", cancelled=cancelled
        )
        if cancelled:
            yield st.CANCEL, None

    def _audit(self, request: RelayRequest, outcome: Outcome, started: float, **detail: Any) -> None:
        """One ``query.relayed`` record per query; a ledger that cannot write is logged, not raised."""
        detail.setdefault("answered_by", "archive")
        detail["status"] = f"0x{int(detail['status']):04X}"
        detail.update(model=request.model_name, query_level=request.level, duration_ms=round((time.monotonic() - started) * 1000))
        if not detail.get("error"):
            detail.pop("error", None)
        self.ledger.audit_or_log(AuditEvent.QUERY_RELAYED, outcome, **request.subject(), detail=detail)


class _CancelWatcher:
    """Passes the requester's C-CANCEL on to the archive as soon as it arrives (PS3.4 C.4.1.2.3)."""

    def __init__(self, event: Any, assoc: Any, model: str) -> None:
        self.cancelled = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(event, assoc, model), name="find-cancel-watch", daemon=True)
        self._thread.start()

    def _watch(self, event: Any, assoc: Any, model: str) -> None:
        while not self._done.wait(_CANCEL_POLL):
            if event.is_cancelled:
                self.cancelled.set()
                # Message ID 1: the only request on this association.
                if not conversation.cancel(assoc, model, 1):
                    log.warning("find.cancel_failed", action="find.cancel_failed")
                return

    def stop(self) -> None:
        """The relay is over."""
        self._done.set()
        self._thread.join(timeout=2)
