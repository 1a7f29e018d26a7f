"""C-MOVE relay: the archive moves to the guard, and the guard relays each instance to the destination.

Why this way and not by forwarding the request: the destination names an AE the archive does
not know and need not reach; the guard is the only node both sides trust (ADR 0006).

For one request from a source (pynetdicom's generator protocol for EVT_C_MOVE):

1. The Move Destination must be a configured peer with an address (``[[destinations]]``, or a
   source with ``host``); otherwise 0xA801, audited as refused.
2. The guard counts the matches with a C-FIND to the archive at IMAGE level (the number of
   sub-operations, and the SOP classes to propose to the destination). At IMAGE level, SOP
   Instance UIDs the requester names explicitly all count, so one the archive lacks is a
   failed sub-operation rather than silently nothing.
3. pynetdicom opens one association to the destination; the guard asks the archive to C-MOVE
   the same identifier to the guard itself, under a Message ID no other relay uses.
4. The archive's C-STOREs arrive on the guard's listener. ``take_store`` recognises them by
   Move Originator AE Title and Message ID (PS3.7 9.3.1.1), or, when the archive leaves those
   out, by SOP Instance UID among the instances the relay expects; they are not ingested and
   never enter the forwarding queue. Each is handed to the relay in its temporary file and
   answered to the archive; the relay sends it on to the destination and removes the file.
   At most ``BUFFERED_INSTANCES`` wait per relay (the archive is answered only when there is
   room), so receiving the next overlaps sending the current one and the disk holds a handful.
5. Pending responses carry the remaining/completed/failed/warning counts; the final response
   is Success, 0xB000 with the Failed SOP Instance UID List when some failed, the archive's own
   failure status (else 0xA702) when nothing was delivered, including when the archive lists
   nothing for the request (never Success then), or Cancel (0xFE00) after a C-CANCEL, which is
   passed on to the archive.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pydicom import Dataset

from guard import runtime
from guard.config.settings import Settings
from guard.dicom import conversation
from guard.dicom.conversation import find_all
from guard.dicom.net import Peer, archive_peer, open_association, source_peer
from guard.dicom.suboperations import (
    COMMON_STORAGE_CLASSES,
    SubOperationTally,
    destination_contexts,
    destination_options,
    pin_problem,
    relayed_file,
)
from guard.domain import status as st
from guard.domain.errors import GuardError, PeerError
from guard.domain.states import AuditEvent, Outcome
from guard.ledger.ledger import Ledger
from guard.ledger.query_answers import values_of
from guard.services.qr.common import (
    MOVE_MODELS,
    UNIQUE_KEYS,
    RelayRequest,
    failed_list,
    read_request,
    status_dataset,
)
from guard.services.qr.inflight import BUFFERED_INSTANCES, ActiveRelay, ArchiveDone, Arrival, RelayRegistry

log = structlog.get_logger("guard.services.qr.move")

__all__ = [
    "BUFFERED_INSTANCES",
    "COMMON_STORAGE_CLASSES",
    "ArchiveMove",
    "Arrival",
    "MovePlan",
    "MoveRelay",
    "RelayRegistry",
    "move_destination",
]

_POLL = 0.1


#: Error Comment of the final response when the archive lists nothing the request names.
NOTHING_LISTED = "the archive holds no instance matching the request"


def _final_status(done: ArchiveDone | None, *, cancelled: bool, listed: bool, delivered: int, failed: bool) -> tuple[int, bool]:
    """The final status of a relayed move, and whether the relay must answer it itself (not pynetdicom's counts).

    Nothing delivered (the archive listed nothing, or every sub-operation failed): the archive's
    own final failure status when it answered one (Orthanc: 0xC000 for a study it does not
    hold), else 0xA702, Unable to perform sub-operations (PS3.4 C.4.2.1.5). Never Success for
    a request the archive holds nothing of: the requester would take a move that did nothing
    for a complete one.
    """
    if cancelled:
        return st.CANCEL, False
    if listed and not failed:
        return st.SUCCESS, False
    if listed and delivered:
        return st.SUBOPERATIONS_COMPLETE_WITH_FAILURES, False
    archive = None if done is None else done.status
    if archive is not None and not st.is_success(archive) and archive not in {st.CANCEL, *st.PENDING_STATUSES}:
        return archive, True
    return st.UNABLE_TO_PERFORM_SUBOPERATIONS, not listed


class MoveNotPossibleError(GuardError):
    """The relayed C-MOVE cannot start (pynetdicom answers 0xC513, Unable to Process)."""


@dataclass(frozen=True)
class MovePlan:
    """What the archive holds for the request: the instances (SOP Instance UID -> SOP Class UID)."""

    expected: dict[str, str]
    #: The archive listed instances without their SOP Class UID: propose the common classes too.
    classes_unknown: bool = False

    def contexts(self) -> list[Any]:
        """Presentation contexts to propose to the destination, most common first."""
        return destination_contexts(self.expected.values(), classes_unknown=self.classes_unknown)


def move_destination(settings: Settings, ae_title: str) -> Peer | None:
    """The configured peer a Move Destination names: a destination, else a source with an address."""
    wanted = ae_title.strip()
    for destination in settings.destinations:
        if destination.ae_title == wanted:
            return Peer(destination.ae_title, destination.host, destination.port, destination.tls, destination.tls_fingerprint)
    source = settings.source(wanted)
    if source is not None and source.host:
        return source_peer(source)
    return None


class ArchiveMove(threading.Thread):
    """The guard's own C-MOVE to the archive (destination: the guard), on its own thread; the final answer goes to the relay's inbox.

    Used by the relay and by byte verification (``guard.services.verify.move``).
    """

    def __init__(self, settings: Settings, request: RelayRequest, relay: ActiveRelay) -> None:
        """Move what ``request`` names for ``relay`` (not started)."""
        super().__init__(name=f"move-relay-{relay.message_id}", daemon=True)
        self.settings = settings
        self.request = request
        self.relay = relay
        self.assoc: Any = None

    def run(self) -> None:
        """Send the C-MOVE and wait for its final response (the sub-operations arrive on the listener)."""
        done = ArchiveDone(None, "no final response from the archive")
        archive = archive_peer(self.settings.archive)
        try:
            ae = conversation.outbound_ae(self.settings.node.ae_title, self.settings.query.timeout, [self.request.model])
            ae.dimse_timeout = self.settings.query.move_idle_timeout
            self.assoc = open_association(ae, archive, [])
            responses = conversation.move_responses(
                self.assoc, self.request.identifier or Dataset(), self.settings.relay_ae_title, self.request.model, archive,
                msg_id=self.relay.message_id,
            )  # fmt: skip
            final, _ = conversation.drain(responses)
            done = ArchiveDone(int(final.Status), conversation.comment_of(final))
        except (PeerError, RuntimeError, ValueError, OSError) as exc:
            done = ArchiveDone(None, str(exc))
        finally:
            if self.assoc is not None and self.assoc.is_established:
                self.assoc.release()
            self.relay.inbox.put(done)

    def cancel(self) -> None:
        """Pass the requester's C-CANCEL on to the archive (PS3.4 C.4.2.2.3)."""
        assoc = self.assoc
        if assoc is None or not assoc.is_established:
            return
        if not conversation.cancel(assoc, self.request.model, self.relay.message_id):
            assoc.abort()

    def abort(self) -> None:
        """Give up on the archive's move."""
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.abort()


def _send_on(relay: ActiveRelay, item: Arrival, pending: set[str], tally: SubOperationTally) -> Iterator[Any]:
    """Yield one instance to pynetdicom, which has it sent to the destination (``guard.dicom.suboperations``); its file is removed after."""
    if item.sop_instance_uid not in pending:
        # Not asked for (or sent twice): not relayed, and not a failure of the move.
        relay.done_with(item)
        log.warning("move.unexpected_instance", action="move.unexpected_instance", sop_instance_uid=item.sop_instance_uid)
        return
    dataset = relayed_file(item.path)  # named, not read: its data set is sent as the archive sent it
    if dataset is None:
        relay.done_with(item)  # stays pending: counted failed at the end
        return
    pending.discard(item.sop_instance_uid)
    tally.statuses[item.sop_instance_uid] = None  # stays None if no response comes back
    try:
        yield st.PENDING, dataset
    finally:
        del dataset
        relay.done_with(item)


class MoveRelay:
    """The C-MOVE SCP side of the relay, and the recogniser of the archive's sub-operations."""

    def __init__(self, settings: Settings, ledger: Ledger, registry: RelayRegistry | None = None) -> None:
        """Relay through the archive named by ``settings``; audit into ``ledger``.

        ``registry`` is shared with the byte verification's C-MOVE retriever, whose instances arrive on the same listener.
        """
        self.settings = settings
        self.ledger = ledger
        self.registry = registry or RelayRegistry()

    # -- the archive's C-STOREs -----------------------------------------------------

    def take_store(self, event: Any) -> Dataset | None:
        """The answer to a C-STORE that belongs to a relayed move; None when it is an ordinary store.

        A boundary: whatever goes wrong answers the archive a failure, never Success.
        """
        req = event.request
        originator_id = req.MoveOriginatorMessageID
        relay = self.registry.match(
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
            originator_ae=str(req.MoveOriginatorApplicationEntityTitle or "").strip(),
            originator_id=int(originator_id) if isinstance(originator_id, int) else None,
            sop_instance_uid=str(req.AffectedSOPInstanceUID or ""),
        )
        if relay is None:
            return None
        path = Path(event.dataset_path)
        taken = False
        try:
            if runtime.take_receive_error(path) is not None:
                return status_dataset(st.OUT_OF_RESOURCES, "relay: cannot receive")
            # pynetdicom removes its temporary file once this handler returns: the relay gets its own name.
            owned = path.with_name(f"relay-{path.name}")
            path.rename(owned)
            path = owned
            taken = relay.deliver(Arrival(owned, str(req.AffectedSOPInstanceUID or "")), self.settings.query.move_idle_timeout)
            return status_dataset(st.SUCCESS) if taken else status_dataset(st.PROCESSING_FAILURE, "relay: the move has ended")
        except Exception as exc:  # boundary: the archive gets a failure status, the listener goes on
            log.exception("move.relay_store_failed", action="move.relay_store_failed")
            return status_dataset(st.PROCESSING_FAILURE, f"relay: {exc.__class__.__name__}")
        finally:
            if not taken:
                path.unlink(missing_ok=True)

    # -- the requester's C-MOVE -----------------------------------------------------

    def on_move(self, event: Any) -> Iterator[Any]:
        """EVT_C_MOVE handler (generator): destination, number of sub-operations, then one yield per instance."""
        request = read_request(event)
        started = time.monotonic()
        name = str(event.request.MoveDestination or "").strip()
        destination = move_destination(self.settings, name)
        if destination is None:
            self._audit(
                request, Outcome.REFUSED, started, destination=name, status=st.MOVE_DESTINATION_UNKNOWN, reason="unknown-destination"
            )
            yield None, None
            return
        plan, problem = self._plan(request)
        tally = SubOperationTally()
        yield destination.host, destination.port, destination_options(destination, tally, plan.contexts() if plan else [])
        if plan is None:
            self._audit(request, Outcome.FAILURE, started, destination=name, status=st.MOVE_UNABLE_TO_PROCESS, error=problem)
            raise MoveNotPossibleError(problem)
        try:
            # pynetdicom answers Success by itself for zero sub-operations, without asking the
            # handler again; announcing one keeps the final answer the relay's (the archive's own
            # status, or a failure with an Error Comment), never a Success for nothing moved.
            yield max(1, len(plan.expected))
        except GeneratorExit:  # pynetdicom answered 0xA801 itself: no association with the destination
            unreachable = {"destination": name, "status": st.MOVE_DESTINATION_UNKNOWN, "error": "cannot associate with the destination"}
            self._audit(request, Outcome.FAILURE, started, **unreachable)
            raise
        problem = pin_problem(destination, tally.assoc)
        if problem:
            failure = {"destination": name, "status": st.UNABLE_TO_PERFORM_SUBOPERATIONS, "error": problem}
            self._audit(request, Outcome.FAILURE, started, **failure)
            yield status_dataset(st.UNABLE_TO_PERFORM_SUBOPERATIONS, problem), failed_list(sorted(plan.expected))
            return
        yield from self._relay(event, request, started, name, plan, tally)

    def _plan(self, request: RelayRequest) -> tuple[MovePlan | None, str]:
        """Count the matches: C-FIND the archive at IMAGE level with the request's keys."""
        identifier = request.identifier
        if identifier is None or request.model not in MOVE_MODELS or not any(values_of(identifier, k) for k in UNIQUE_KEYS):
            return None, "identifier cannot be decoded or names nothing to move"
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        for keyword in UNIQUE_KEYS:
            values = values_of(identifier, keyword)
            setattr(query, keyword, values if len(values) > 1 else (values[0] if values else ""))
        query.SOPClassUID = ""
        try:
            found = {
                str(ds.SOPInstanceUID): str(ds.get("SOPClassUID", ""))
                for ds in find_all(
                    self.settings.node.ae_title,
                    archive_peer(self.settings.archive),
                    query,
                    MOVE_MODELS[request.model],
                    timeout=self.settings.query.timeout,
                )
                if "SOPInstanceUID" in ds
            }
        except GuardError as exc:
            return None, f"cannot count the matches in the archive: {exc}"
        named = values_of(identifier, "SOPInstanceUID") if request.level == "IMAGE" else []
        expected = {uid: found.get(uid, "") for uid in named} if named else found
        return MovePlan(expected, classes_unknown=any(not c for c in found.values())), ""

    def _relay(
        self, event: Any, request: RelayRequest, started: float, name: str, plan: MovePlan, tally: SubOperationTally
    ) -> Iterator[Any]:
        """The sub-operations: the archive's instances relayed one by one, then the final answer."""
        pending = set(plan.expected)
        relay = self.registry.open(self.settings.archive.ae_title, set(plan.expected))
        mover = ArchiveMove(self.settings, request, relay)
        mover.start()
        done: ArchiveDone | None = None
        cancelled = finished = False
        try:
            idle_until = time.monotonic() + self.settings.query.move_idle_timeout
            while done is None:
                if event.is_cancelled:
                    cancelled = True
                    mover.cancel()
                    break
                try:
                    item = relay.inbox.get(timeout=_POLL)
                except queue.Empty:
                    if time.monotonic() > idle_until:
                        done = ArchiveDone(None, f"nothing from the archive for {self.settings.query.move_idle_timeout:g} s")
                        mover.abort()
                    continue
                idle_until = time.monotonic() + self.settings.query.move_idle_timeout
                if isinstance(item, ArchiveDone):
                    done = item
                    continue
                yield from _send_on(relay, item, pending, tally)
            relay_done = self._finish(request, started, name, plan, tally, pending, done, cancelled=cancelled)
            finished = True
            self.registry.close(relay)
            if relay_done is not None:
                yield relay_done
        finally:
            self.registry.close(relay)
            if not finished:
                mover.abort()
                self._audit(
                    request, Outcome.FAILURE, started, destination=name, status=st.UNABLE_TO_PROCESS, error="requester association ended"
                )

    def _finish(
        self,
        request: RelayRequest,
        started: float,
        name: str,
        plan: MovePlan,
        tally: SubOperationTally,
        missing: set[str],
        done: ArchiveDone | None,
        *,
        cancelled: bool,
    ) -> tuple[Dataset, Dataset] | None:
        """Audit the move and choose the final answer; None lets pynetdicom answer from its own counts."""
        completed, warning, failed = tally.counts()
        not_delivered = sorted(missing)
        archive_status = None if done is None or done.status is None else f"0x{done.status:04X}"
        error = "" if done is None or done.status == st.SUCCESS else done.error or f"archive answered {archive_status}"
        status, explicit = _final_status(
            done, cancelled=cancelled, listed=bool(plan.expected), delivered=completed + warning, failed=bool(failed or not_delivered)
        )
        if not plan.expected and not cancelled:
            error = error or NOTHING_LISTED
        all_failed = failed + ([] if cancelled else not_delivered)
        self._audit(
            request,
            Outcome.SUCCESS if status in {st.SUCCESS, st.CANCEL} else Outcome.FAILURE,
            started,
            destination=name,
            status=status,
            expected=len(plan.expected),
            completed=completed,
            warning=warning,
            failed=len(all_failed),
            remaining=len(not_delivered) if cancelled else 0,
            failed_sop_instance_uids=all_failed[:50],
            archive_status=archive_status,
            error=error,
            cancelled=cancelled,
        )
        if not explicit and (status == st.SUCCESS or (status != st.CANCEL and not not_delivered)):
            return None
        comment = error or (f"{len(not_delivered)} instance(s) not delivered by the archive" if not_delivered else "")
        return status_dataset(status, comment), failed_list(all_failed)

    def _audit(self, request: RelayRequest, outcome: Outcome, started: float, **detail: Any) -> None:
        """One ``move.relayed`` record per request; a ledger that cannot write is logged, not raised."""
        detail["status"] = f"0x{int(detail['status']):04X}"
        detail.update(model=request.model_name, query_level=request.level, duration_ms=round((time.monotonic() - started) * 1000))
        detail = {k: v for k, v in detail.items() if v not in (None, "")}
        self.ledger.audit_or_log(AuditEvent.MOVE_RELAYED, outcome, **request.subject(), detail=detail)
