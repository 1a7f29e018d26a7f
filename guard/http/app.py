"""The admin HTTP API: health, readiness, metrics, study state, the HTTP delete channel, the audit log.

``create_app`` builds the FastAPI application from objects the service already holds; it
starts nothing and reads no configuration of its own. Choices made here:

- Authentication is ``guard.http.auth``: ``DELETE /studies/{uid}`` needs a bearer token with
  the ``delete`` scope (``[[http.tokens]]``, or ``http.token`` / ``http.token_file`` as the
  identity ``admin``), and the token's identity is the actor of the delete's audit records.
  With no token configured every DELETE is refused with 401 (fail closed). Read endpoints
  (``/studies``, ``/audit``, ``/status``) need a ``read`` token only with
  ``http.read_requires_token``; the API binds to 127.0.0.1 by default. Refusals are audited
  (``security.alert``), repeated failures from one address get 429.
- ``GET /studies/{uid}`` of a study the guard never received answers 200 with ``known: false``
  and ``deletable`` refused with ``unknown-study`` (the same answer a delete would get), not 404.
- A refused delete is 409 and a permitted delete the backend failed to carry out is 502; both
  are problem documents that also carry the decision, reasons, sentence and evidence.
- Endpoints that touch the ledger or peers are plain functions: FastAPI runs them in its
  thread pool, so a slow C-FIND at decision time does not block ``/healthz``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations, and
# those of the endpoints defined inside ``create_app`` name local dependencies that a string
# annotation could not resolve.

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

import guard.runtime.metrics  # noqa: F401 - imported for its side effect: the guard's counters are in the default registry
from guard import __version__
from guard.config.settings import Settings, TokenScope
from guard.dicom.probe import ArchiveProbe
from guard.domain.decision import Decision
from guard.domain.states import AuditEvent, Outcome
from guard.domain.times import parse_utc
from guard.domain.uids import is_valid_uid
from guard.http.auth import Authenticator, Principal
from guard.http.limits import install_request_limits
from guard.http.metrics import LedgerCollector, count_decision
from guard.http.models import (
    AuditPage,
    AuditRecordView,
    BackendFailedProblem,
    Deletable,
    DeletePermitted,
    DeleteRefusedProblem,
    Health,
    Ready,
    StudyView,
)
from guard.http.problems import ProblemError, install_problem_handlers, problem_openapi
from guard.http.status import add_status
from guard.ledger.audit_query import query_audit
from guard.ledger.ledger import Ledger
from guard.ledger.study_report import study_report
from guard.services.delete.gate import DeleteGate, DeleteOutcome

#: Most audit records one page of ``GET /audit`` returns.
MAX_AUDIT_PAGE = 1000
#: Longest ``reason`` a delete request may give (it is stored in the audit log).
MAX_REASON_LENGTH = 1000
_MAX_SEQ = 2**63 - 1
#: The DICOM UID grammar (PS3.5 9.1) as an OpenAPI pattern, with its length limit; the check itself is ``is_valid_uid``.
UID_SCHEMA: dict[str, Any] = {"pattern": r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$", "maxLength": 64}
TIME_SCHEMA: dict[str, Any] = {"format": "date-time"}
EVENT_SCHEMA: dict[str, Any] = {"enum": sorted(e.value for e in AuditEvent)}

#: A Study Instance UID in the path. The grammar is published in the schema, but checked by the
#: handler, so that a UID outside it is a 400 problem naming it rather than a generic 422.
StudyUID = Annotated[str, Path(description="Study Instance UID.", json_schema_extra=UID_SCHEMA)]

Readiness = Callable[[], dict[str, bool]]

log = structlog.get_logger("guard.http")


# -- helpers ----------------------------------------------------------------------------------

INVALID_UID = problem_openapi("The study UID does not follow the DICOM UID grammar (PS3.5 9.1).")
INVALID_REQUEST = problem_openapi("A parameter is not valid.")
UNAUTHORIZED = problem_openapi("No valid bearer token (or no token configured: every DELETE is refused).")
FORBIDDEN = problem_openapi("The token is valid but lacks the scope this request needs (read or delete).")
RATE_LIMITED = problem_openapi("Too many failed authentications from this address; see Retry-After.")


def _invalid_uid(value: str, what: str = "study UID") -> ProblemError:
    shown = repr(value)[:80]
    return ProblemError(400, "invalid-uid", "Invalid UID", f"the {what} is not a valid DICOM UID: {shown}")


def _peer(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


def _parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 date or time; without a zone it is UTC. A time beyond the representable range is clamped to it."""
    if value is None:
        return None
    try:
        return parse_utc(value)
    except ValueError as exc:
        raise ProblemError(400, "invalid-time", "Invalid time", f"{name} is not an ISO 8601 date or time: {value[:80]!r}") from exc


def _deletable(decision: Decision) -> Deletable:
    return Deletable(
        decision=decision.label, reasons=[r.value for r in decision.reasons], sentence=decision.sentence, evidence=decision.evidence
    )


# -- the application -------------------------------------------------------------------------


def create_app(settings: Settings, ledger: Ledger, gate: DeleteGate, readiness: Readiness, probe: ArchiveProbe | None = None) -> FastAPI:
    """The admin API over ``ledger`` and ``gate``; ``readiness`` returns named checks, all True when ready.

    ``probe`` is the archive's C-ECHO probe the status page reports (a probe not started, when none is given).
    """
    app = FastAPI(
        title="guard admin API",
        version=__version__,
        description=__doc__,
        docs_url=None,
        redoc_url=None,
    )
    install_problem_handlers(app)
    install_request_limits(app, ledger)
    _add_probes(app, ledger, readiness)
    auth = Authenticator(settings, ledger)
    reader = Depends(auth.reader())
    _add_studies(app, settings, ledger, gate, reader)
    _add_delete(app, gate, auth)
    _add_audit(app, ledger, reader)
    heartbeat = timedelta(seconds=settings.node.heartbeat_seconds)
    add_status(app, ledger, probe or ArchiveProbe(settings), read_dependencies=[reader], heartbeat=heartbeat)
    return app


def _add_probes(app: FastAPI, ledger: Ledger, readiness: Readiness) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics``."""
    ledger_metrics = CollectorRegistry(auto_describe=False)
    ledger_metrics.register(LedgerCollector(ledger))

    @app.get("/healthz", summary="The process is alive.")
    async def healthz() -> Health:
        return Health()

    @app.get(
        "/readyz",
        response_model=Ready,
        summary="Ready to serve: ledger reachable, spool writable, workers alive.",
        responses={503: {"model": Ready, "description": "Not ready; the checks say which part is not."}},
    )
    def readyz() -> JSONResponse:
        try:
            checks = {str(name): bool(ok) for name, ok in readiness().items()}
        except Exception:  # the readiness boundary: any failing check is "not ready" (503), logged
            log.exception("readiness.check_failed", action="readiness.check_failed")
            checks = {"readiness": False}
        ready = all(checks.values())
        body = Ready(status="ready" if ready else "not-ready", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        response_class=Response,
        summary="Prometheus metrics (text exposition format).",
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics."}},
    )
    def metrics() -> Response:
        body = generate_latest(REGISTRY) + generate_latest(ledger_metrics)
        return Response(content=body, media_type=CONTENT_TYPE_LATEST)


def _add_studies(app: FastAPI, settings: Settings, ledger: Ledger, gate: DeleteGate, reader: Any) -> None:
    """``GET /studies/{uid}`` (``reader`` protects it when reads need a token)."""

    @app.get(
        "/studies/{uid}",
        summary="State of a study, counts per instance state, and whether it may be deleted now.",
        responses={400: INVALID_UID, 401: UNAUTHORIZED, 403: FORBIDDEN, 422: INVALID_REQUEST, 429: RATE_LIMITED},
        dependencies=[reader],
    )
    def get_study(uid: StudyUID) -> StudyView:
        if not is_valid_uid(uid):
            raise _invalid_uid(uid)
        report = study_report(ledger, uid, quiet=timedelta(seconds=settings.confirm.batch_wait))
        return StudyView(**report.as_dict(), deletable=_deletable(gate.evaluate(uid)))


def _add_delete(app: FastAPI, gate: DeleteGate, auth: Authenticator) -> None:
    """``DELETE /studies/{uid}`` (a bearer token with the delete scope)."""
    require_delete = auth.require(TokenScope.DELETE)

    @app.delete(
        "/studies/{uid}",
        summary="Ask the delete gate; a permitted delete is carried out by the configured backend.",
        responses={
            400: INVALID_UID,
            401: UNAUTHORIZED,
            403: FORBIDDEN,
            429: RATE_LIMITED,
            409: problem_openapi("Refused: the study lacks a confirmed, complete copy; see reasons.", DeleteRefusedProblem),
            422: INVALID_REQUEST,
            502: problem_openapi("Permitted, but the backend failed to delete; nothing was marked deleted.", BackendFailedProblem),
        },
    )
    def delete_study(
        uid: StudyUID,
        request: Request,
        principal: Annotated[Principal, Depends(require_delete)],
        reason: Annotated[str | None, Query(max_length=MAX_REASON_LENGTH, description="Why (audited).")] = None,
    ) -> DeletePermitted:
        if not is_valid_uid(uid):
            raise _invalid_uid(uid)
        return _delete_answer(
            gate, uid, gate.request(uid, channel="http", requester=principal.identity, peer_address=_peer(request), reason=reason)
        )


def _delete_answer(gate: DeleteGate, uid: str, outcome: DeleteOutcome) -> DeletePermitted:
    """The 200 answer for a delete carried out; a problem (409, 502) for the others. Counts the decision."""
    decision = outcome.decision
    reasons = [r.value for r in decision.reasons]
    if not decision.permitted:
        count_decision("http", "refused", reasons)
        raise ProblemError(
            409,
            "delete-refused",
            "Delete refused",
            decision.sentence,
            decision="refused",
            study_uid=uid,
            reasons=reasons,
            sentence=decision.sentence,
            evidence=decision.evidence,
        )
    if not outcome.carried_out:
        count_decision("http", "backend-failed", [])
        error = outcome.backend_error or "the backend did not carry the delete out"
        raise ProblemError(
            502,
            "backend-failed",
            "Delete permitted but not carried out",
            f"the {gate.backend.name} backend failed: {error}",
            decision="permitted",
            carried_out=False,
            study_uid=uid,
            backend=gate.backend.name,
            backend_error=error,
            sentence=decision.sentence,
            evidence=decision.evidence,
        )
    count_decision("http", "permitted", [])
    return DeletePermitted(study_uid=uid, sentence=decision.sentence, evidence=decision.evidence, backend=gate.backend.name)


def _add_audit(app: FastAPI, ledger: Ledger, reader: Any) -> None:
    """``GET /audit`` (``reader`` protects it when reads need a token)."""

    @app.get(
        "/audit",
        summary="Audit records, oldest first, filtered; page with ``after`` = the previous page's ``next``.",
        responses={
            400: problem_openapi("A filter is not valid (UID, event name or time)."),
            401: UNAUTHORIZED,
            403: FORBIDDEN,
            422: INVALID_REQUEST,
            429: RATE_LIMITED,
        },
        dependencies=[reader],
    )
    def audit(  # noqa: PLR0913, PLR0917 - one parameter per query filter, as FastAPI reads them
        study: Annotated[str | None, Query(description="Study Instance UID.", json_schema_extra=UID_SCHEMA)] = None,
        event: Annotated[str | None, Query(description="Event name, e.g. delete.refused.", json_schema_extra=EVENT_SCHEMA)] = None,
        patient: Annotated[str | None, Query(description="Patient ID.", max_length=64)] = None,
        outcome: Annotated[Outcome | None, Query(description="Outcome of the audited action.")] = None,
        ae: Annotated[str | None, Query(description="Actor: AE title or token identity.", max_length=80)] = None,
        since: Annotated[
            str | None, Query(description="ISO 8601 time (UTC when no zone), inclusive.", json_schema_extra=TIME_SCHEMA)
        ] = None,
        until: Annotated[
            str | None, Query(description="ISO 8601 time (UTC when no zone), inclusive.", json_schema_extra=TIME_SCHEMA)
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE, description="Records per page.")] = 100,
        after: Annotated[int | None, Query(ge=0, le=_MAX_SEQ, description="Only records with a greater seq (cursor).")] = None,
    ) -> AuditPage:
        if study is not None and not is_valid_uid(study):
            raise _invalid_uid(study, "study filter")
        known_events = {e.value for e in AuditEvent}
        if event is not None and event not in known_events:
            raise ProblemError(
                400, "invalid-event", "Unknown event", f"{event[:80]!r} is not an audit event; known: {', '.join(sorted(known_events))}"
            )
        rows = query_audit(
            ledger,
            study_uid=study,
            patient_id=patient,
            event=event,
            outcome=outcome.value if outcome is not None else None,
            actor=ae,
            since=_parse_time(since, "since"),
            until=_parse_time(until, "until"),
            limit=limit + 1,
            after_seq=after,
        )
        page = rows[:limit]
        more = len(rows) > limit
        return AuditPage(records=[AuditRecordView(**r.as_dict()) for r in page], next=page[-1].seq if more else None)
