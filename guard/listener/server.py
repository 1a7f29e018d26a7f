"""The guard's DICOM listener: association policy and thin handlers around ``IngestService``.

Every handler runs inside one boundary (``guard.dicom.boundary.HandlerBoundary``): whatever
goes wrong inside that it did not expect becomes a specific DIMSE status, a log line and a
``security.alert`` (``alert: handler-failed``, throttled per address and cause), never a Success
and never a crash of the listener. A DIMSE message pynetdicom cannot decode aborts its
association and is audited the same way (``alert: dimse-undecodable``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import structlog
from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from guard import runtime
from guard.config.settings import Settings
from guard.dicom import tls
from guard.dicom.boundary import HandlerBoundary
from guard.dicom.commitment import ACTION_REQUEST_COMMIT, parse_report
from guard.dicom.net import NODELAY_HANDLER
from guard.domain import status as st
from guard.domain.admission import Service, context_allowed
from guard.domain.errors import GuardError
from guard.domain.states import AuditEvent, Outcome
from guard.domain.uids import is_valid_uid
from guard.ledger.ledger import Ledger
from guard.listener.limits import Limits, limit_refusal, start_limited_server
from guard.listener.tls_server import start_tls_server
from guard.runtime.negotiation import SupportedContexts
from guard.services.confirm.confirmer import Confirmer
from guard.services.ingest import IngestService, RejectReason, StoreRequest
from guard.services.qr.move import MoveNotPossibleError
from guard.services.qr.relay import SUPPORTED_MODELS, QueryRetrieveRelay

log = structlog.get_logger("guard.dicom")

#: Seconds the associations in flight get to finish when the listener stops, before they are aborted.
DRAIN_TIMEOUT = 30.0

# A-ASSOCIATE-RJ: rejected-permanent, by the service user (PS3.8 9.3.4)
_REJECTED_PERMANENT = 0x01
_SERVICE_USER = 0x01
# A-ASSOCIATE-RJ for a limit: rejected-transient, service-provider (presentation), local-limit-exceeded
_REJECTED_TRANSIENT = 0x02
_PROVIDER_PRESENTATION = 0x03
_LOCAL_LIMIT_EXCEEDED = 0x02


def _peer_address(event: Any) -> str:
    """The remote IP address of the association."""
    return str(event.assoc.requestor.address)


def add_supported_contexts(ae: AE, *, query_retrieve: bool) -> SupportedContexts:
    """Give ``ae`` the listener's supported presentation contexts; the same, prepared for negotiation.

    Every storage SOP class and Verification with every transfer syntax pynetdicom knows, Storage
    Commitment in either role, and the Query/Retrieve models when the relay is on.
    """
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    # Sources send N-ACTION (they are SCU); the archive opens associations as SCP to send
    # N-EVENT-REPORT (role selection, PS3.4 J.3.3): accept whichever role is proposed.
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    if query_retrieve:  # Query/Retrieve FIND and MOVE SCP, relayed to the archive (guard.qr)
        for model in SUPPORTED_MODELS:
            ae.add_supported_context(model)
    return SupportedContexts(ae.supported_contexts)


def _answer(status: int, comment: str) -> Dataset:
    """A status data set with an Error Comment (0000,0902) when there is one."""
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment
    return ds


class IngestServer:
    """The C-STORE and C-ECHO SCP the PACS sends to."""

    def __init__(
        self, settings: Settings, ingest: IngestService, confirmer: Confirmer | None = None, qr: QueryRetrieveRelay | None = None
    ) -> None:
        """Build the AE from ``settings``; ``start`` opens the port."""
        self.settings = settings
        self.ingest = ingest
        self.confirmer = confirmer
        self.qr = qr
        self.ae = AE(ae_title=settings.node.ae_title)
        self.ae.maximum_pdu_size = settings.node.max_pdu
        # The listener's own accounting (guard.listener.limits) enforces max_associations and the
        # per-address caps; pynetdicom's ceiling only backs it up.
        self.ae.maximum_associations = settings.node.max_associations + settings.node.max_pending
        self.ae.network_timeout = settings.node.network_timeout
        self.ae.acse_timeout = settings.node.acse_timeout
        self.ae.dimse_timeout = settings.node.dimse_timeout
        # Prepared once for every association: pynetdicom copies and negotiates against these (guard.runtime.negotiation).
        self.contexts = add_supported_contexts(self.ae, query_retrieve=qr is not None)
        self.boundary = HandlerBoundary(self.on_handler_failure)
        self.server: ThreadedAssociationServer | None = None
        self.tls_server: ThreadedAssociationServer | None = None

    def handlers(self) -> list[Any]:
        """The event handlers bound to the listener."""
        boundary = self.boundary
        return [
            NODELAY_HANDLER,
            (evt.EVT_CONN_OPEN, boundary.guard_decoding),
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_REJECTED, self.on_rejected),
            # PS3.4 B.2.3: 0xA700 Out of Resources, the store may be retried.
            (evt.EVT_C_STORE, boundary.plain("c-store", self.on_store, st.OUT_OF_RESOURCES)),
            (evt.EVT_C_ECHO, boundary.plain("c-echo", self.on_echo, st.PROCESSING_FAILURE)),
            (evt.EVT_N_ACTION, boundary.pairs("n-action", self.on_n_action, st.PROCESSING_FAILURE)),
            (evt.EVT_N_EVENT_REPORT, boundary.pairs("n-event-report", self.on_n_event_report, st.PROCESSING_FAILURE)),
            *self.qr_handlers(),
        ]

    def qr_handlers(self) -> list[Any]:
        """C-FIND and C-MOVE handlers of the query/retrieve relay, when it is on."""
        if self.qr is None:
            return []
        return [
            # PS3.4 C.4.1.1.4: 0xC001 Unable to process.
            (evt.EVT_C_FIND, self.boundary.find("c-find", self.qr.on_find, st.UNABLE_TO_PROCESS)),
            (evt.EVT_C_MOVE, self.boundary.move("c-move", self.qr.on_move, (MoveNotPossibleError,))),
        ]

    def on_handler_failure(self, address: str, cause: str, detail: dict[str, Any]) -> None:
        """An unexpected error at the handler boundary (throttled per address and cause): a ``security.alert``."""
        alert = "dimse-undecodable" if detail.get("service") == "dimse-decode" else "handler-failed"
        actor = str(detail.get("calling_ae") or "") or None
        self.ingest.ledger.audit_or_log(
            AuditEvent.SECURITY_ALERT, Outcome.FAILURE, actor=actor, peer_address=address, detail={"alert": alert, "cause": cause, **detail}
        )

    def start(self) -> None:
        """Open the listening ports (plain and/or DICOM TLS); associations are served on their own threads."""
        if self.settings.tls.plain_listener:
            address = (self.settings.node.bind, self.settings.node.port)
            self.server = start_limited_server(
                self.ae,
                address,
                self.handlers(),
                Limits.from_settings(self.settings.node),
                contexts=self.contexts,
                report_refusal=self.on_limit_refusal,
                report_violation=self.on_limit_violation,
            )
        if self.settings.tls.port:
            self.tls_server = start_tls_server(
                self.ae,
                (self.settings.node.bind, self.settings.tls.port),
                self.handlers(),
                handshake_timeout=self.settings.tls.handshake_timeout,
                on_refused=self.on_tls_refused,
                contexts=self.contexts,
                limits=Limits.from_settings(self.settings.node),
                report_refusal=self.on_limit_refusal,
                report_violation=self.on_limit_violation,
            )

    @property
    def port(self) -> int:
        """The port actually bound (useful when configured as 0)."""
        if self.server is None:
            return self.settings.node.port
        return int(self.server.server_address[1])

    def stop(self, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Stop accepting on every listener, let associations in flight finish (bounded), then abort the rest."""
        if self.tls_server is not None:
            tls_server, self.tls_server = self.tls_server, None
            self._stop_server(tls_server, drain_timeout)
        if self.server is not None:
            server, self.server = self.server, None
            self._stop_server(server, drain_timeout)

    def _stop_server(self, server: ThreadedAssociationServer, drain_timeout: float) -> None:
        # shutdown() stops the accept loop and closes the listening socket; it leaves the
        # associations in flight alone, which are then given time to finish.
        server.shutdown()
        # Connections that never sent an A-ASSOCIATE-RQ (port probes) have nothing to finish.
        active = []
        for assoc in server.active_associations:
            if assoc.is_established:
                active.append(assoc)
            else:
                assoc.abort()
        deadline = time.monotonic() + drain_timeout
        while any(a.is_alive() and a.is_established for a in active) and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in active:
            if assoc.is_alive():
                assoc.abort()

    def on_tls_refused(self, address: str, reason: str, error: str) -> None:
        """A TLS handshake on the TLS listener failed: no association, a security alert (PS3.15 B.1)."""
        log.warning("tls.refused", action="tls.refused", peer_address=address, reason=reason, error=error)
        self.ingest.ledger.audit_or_log(
            AuditEvent.SECURITY_ALERT,
            Outcome.REFUSED,
            peer_address=address,
            detail={"alert": "tls-handshake-refused", "reason": reason, "error": error},
        )

    def _tls_policy_refused(self, event: Any) -> bool:
        """Refuse (and audit) a peer configured for TLS that came in plain, or with a certificate other than its pin."""
        primitive = event.assoc.requestor.primitive
        calling, called = str(primitive.calling_ae_title).strip(), str(primitive.called_ae_title).strip()
        refusal = tls.inbound_refusal(self.settings, calling, event.assoc)
        if refusal is None:
            return False
        reason, extra = refusal
        self.ingest.ledger.audit(
            AuditEvent.ASSOCIATION_REJECTED,
            Outcome.REFUSED,
            actor=calling,
            peer_address=_peer_address(event),
            detail={"calling_ae": calling, "called_ae": called, "reason": reason, **extra},
        )
        event.assoc.acse.send_reject(_REJECTED_PERMANENT, _SERVICE_USER, int(RejectReason.NO_REASON))
        event.assoc.kill()
        return True

    def on_requested(self, event: Any) -> None:
        """Admission: limits first, then unknown calling AEs, wrong called AEs, sources from the wrong address; services."""
        if self._limit_refused(event) or self._tls_policy_refused(event):
            return
        primitive = event.assoc.requestor.primitive
        admission = self.ingest.admit(
            calling_ae=str(primitive.calling_ae_title),
            called_ae=str(primitive.called_ae_title),
            address=_peer_address(event),
        )
        if not admission.accepted:
            event.assoc.acse.send_reject(_REJECTED_PERMANENT, _SERVICE_USER, int(admission.diagnostic))
            # As pynetdicom does after its own rejections: wait (bounded by ARTIM) until the
            # A-ASSOCIATE-RJ is out and the peer has closed, so the PDU is not lost.
            event.assoc.kill()
        elif admission.services is not None:
            self._restrict_services(event, admission.services)

    def _limit_refused(self, event: Any) -> bool:
        """Over an association cap: A-ASSOCIATE-RJ rejected-transient, local-limit-exceeded (PS3.8 9.3.4), audited."""
        reason = limit_refusal(event.assoc)
        if reason is None:
            return False
        primitive = event.assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        detail = {"calling_ae": calling, "called_ae": str(primitive.called_ae_title).strip(), "reason": reason}
        self._audit(AuditEvent.ASSOCIATION_REJECTED, calling, _peer_address(event), detail)
        event.assoc.acse.send_reject(_REJECTED_TRANSIENT, _PROVIDER_PRESENTATION, _LOCAL_LIMIT_EXCEEDED)
        event.assoc.kill()
        return True

    def _restrict_services(self, event: Any, services: frozenset[Service]) -> None:
        """Offer this association only the presentation contexts of the source's services; audit what it asked beyond them.

        A context for a service the source may not use is rejected as abstract-syntax-not-supported
        (PS3.8 9.3.3.2), so C-FIND, C-MOVE and Storage Commitment are refused before any handler runs.
        """
        acceptor = event.assoc.acceptor
        supported = acceptor.supported_contexts
        if isinstance(supported, SupportedContexts):  # the listener's own: narrowed once per set of services
            acceptor.supported_contexts = supported.restricted(services)
        else:
            acceptor.supported_contexts = [cx for cx in supported if context_allowed(str(cx.abstract_syntax), services)]
        asked = event.assoc.requestor.primitive.presentation_context_definition_list or []
        refused = sorted({str(cx.abstract_syntax) for cx in asked if not context_allowed(str(cx.abstract_syntax), services)})
        if refused:
            calling = str(event.assoc.requestor.primitive.calling_ae_title).strip()
            detail = {"alert": "service-not-allowed", "reason": "service-not-allowed", "abstract_syntaxes": refused[:20]}
            self._audit(AuditEvent.SECURITY_ALERT, calling, _peer_address(event), detail)

    def on_limit_refusal(self, address: str, reason: str, detail: dict[str, Any]) -> None:
        """A connection closed by a limit before its association (throttled per address and reason)."""
        log.warning("association.limit", action="association.limit", peer_address=address, reason=reason, **detail)
        self._audit(AuditEvent.ASSOCIATION_REJECTED, None, address, {"reason": reason, **detail})

    def on_limit_violation(self, address: str, reason: str, detail: dict[str, Any]) -> None:
        """A peer sent more than the guard accepts (oversized PDU, command or message): aborted, audited."""
        log.warning("security.alert", action="limit.violation", peer_address=address, reason=reason, **detail)
        self._audit(AuditEvent.SECURITY_ALERT, None, address, {"alert": reason, "reason": reason, **detail})

    def _audit(self, event: AuditEvent, actor: str | None, address: str, detail: dict[str, Any]) -> None:
        """Audit a refusal; a ledger that cannot write is logged (the refusal stands)."""
        self.ingest.ledger.audit_or_log(event, Outcome.REFUSED, actor=actor, peer_address=address, detail=detail)

    def on_rejected(self, event: Any) -> None:
        """Rejections decided inside pynetdicom (e.g. too many associations) are logged here."""
        log.warning("association.limit", action="association.limit", peer_address=_peer_address(event))

    def on_echo(self, _event: Any) -> int:
        """C-ECHO: the guard is alive."""
        return st.SUCCESS

    def on_store(self, event: Any) -> Dataset:
        """C-STORE: durable first, Success after (invariant 1); a relayed move's instance goes to its relay."""
        path = Path(event.dataset_path)
        try:
            return self._store(event, path)
        finally:
            # Renamed into the spool, given to a relay or removed: nothing more to hold for it (flat memory on a long association).
            runtime.forget_handed_over(path)

    def _store(self, event: Any, path: Path) -> Dataset:
        if self.qr is not None:
            relayed = self.qr.take_store(event)
            if relayed is not None:
                return relayed
        req = event.request
        try:
            answer = self.ingest.store(
                StoreRequest(
                    temp_path=path,
                    sop_class_uid=str(req.AffectedSOPClassUID or ""),
                    sop_instance_uid=str(req.AffectedSOPInstanceUID or ""),
                    transfer_syntax=str(event.context.transfer_syntax),
                    calling_ae=str(event.assoc.requestor.ae_title).strip(),
                    peer_address=_peer_address(event),
                    receive_error=runtime.take_receive_error(path),
                ),
            )
        except Exception:
            # Nobody answers for the file once the store failed; the boundary answers the peer.
            path.unlink(missing_ok=True)
            raise
        return _answer(answer.status, answer.comment)

    def _calling_ae(self, event: Any) -> str:
        return str(event.assoc.requestor.ae_title).strip()

    def on_n_action(self, event: Any) -> tuple[int, Dataset | None]:
        """Storage Commitment request from a source (PS3.4 J.3.2): store it durably, then answer."""
        calling = self._calling_ae(event)
        if self.confirmer is None or not self.ingest.is_source(calling):
            self._alert(event, "commitment-request-from-non-source")
            return st.REFUSED_NOT_AUTHORIZED, None
        if int(event.action_type) != ACTION_REQUEST_COMMIT:
            return st.NO_SUCH_ACTION_TYPE, None
        try:
            request = event.action_information
            transaction_uid = str(request.TransactionUID)
            references = [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)) for i in request.ReferencedSOPSequence]
        except (AttributeError, KeyError, TypeError, ValueError):
            return st.INVALID_ARGUMENT_VALUE, None
        if not is_valid_uid(transaction_uid) or not all(is_valid_uid(c) and is_valid_uid(u) for c, u in references):
            self._alert(event, "invalid-uid-in-commitment-request")
            return st.INVALID_ARGUMENT_VALUE, None
        try:
            self.confirmer.on_source_request(
                transaction_uid=transaction_uid, source_ae=calling, peer_address=_peer_address(event), references=references
            )
        except GuardError:
            log.exception("commitment.request_failed", action="commitment.request_failed")
            return st.PROCESSING_FAILURE, None
        return st.SUCCESS, None

    def on_n_event_report(self, event: Any) -> tuple[int, Dataset | None]:
        """Storage Commitment report from the archive on a new association (PS3.4 J.3.3)."""
        calling = self._calling_ae(event)
        if self.confirmer is None or not self.ingest.is_archive(calling):
            self._alert(event, "commitment-report-from-non-archive")
            return st.REFUSED_NOT_AUTHORIZED, None
        try:
            report = parse_report(event.event_information)
        except (AttributeError, KeyError, TypeError, ValueError):
            report = None
        if report is None:
            return st.INVALID_ARGUMENT_VALUE, None
        try:
            known = self.confirmer.on_archive_report(report, calling, _peer_address(event))
        except GuardError:
            log.exception("commitment.report_failed", action="commitment.report_failed")
            return st.PROCESSING_FAILURE, None
        return (st.SUCCESS if known else st.NO_SUCH_OBJECT_INSTANCE), None

    def _alert(self, event: Any, alert: str) -> None:
        ledger: Ledger = self.ingest.ledger
        ledger.audit_or_log(
            AuditEvent.SECURITY_ALERT,
            Outcome.REFUSED,
            actor=self._calling_ae(event),
            peer_address=_peer_address(event),
            detail={"alert": alert},
        )
