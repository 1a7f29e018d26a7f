"""The status page: ``GET /`` (static HTML, CSS and JavaScript shipped in ``guard/http/static``) and ``GET /status`` (its numbers).

The page is read-only and fetches nothing from outside the guard: no CDN, no fonts, no
library; the throughput chart is inline SVG drawn by ``status.js``. Everything it shows comes
from ``GET /status`` (this module), ``GET /studies/{uid}`` and ``GET /audit?study=`` (the admin
API). When a read endpoint answers 401 (a guard whose read endpoints require a token), the page
asks for the token once, keeps it for the browser tab only (``sessionStorage``) and sends it
as ``Authorization: Bearer``.

The HTML itself carries no data, so it is served without a token; a strict
Content-Security-Policy (``'self'`` only, no inline script) keeps the page from loading or
running anything else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sqlalchemy import Integer, cast, extract, func, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from guard import __version__
from guard.dicom.probe import ArchiveProbe
from guard.domain.states import AuditEvent, InstanceState
from guard.ledger.audit import Ledger
from guard.ledger.instances import as_utc
from guard.ledger.schema import audit_log, instances

STATIC_DIR = Path(str(files("guard.http") / "static"))
#: Minutes of throughput the chart shows.
WINDOW_MINUTES = 60
#: Most delete decisions and dead letters the page lists.
RECENT_LIMIT = 20
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: States in which an instance is received but not (or no longer) proven to be in the archive.
PENDING_STATES = (InstanceState.RECEIVED, InstanceState.FAILED, InstanceState.FORWARDED, InstanceState.MISSING)
QUEUE_STATES = (InstanceState.RECEIVED, InstanceState.FAILED)


class OldestUnconfirmed(BaseModel):
    """The instance waiting longest for the archive's proof."""

    study_uid: str
    sop_instance_uid: str
    state: str
    received_at: str
    age_seconds: float


class Throughput(BaseModel):
    """Instances per minute over the last hour, oldest minute first."""

    start: str = Field(description="Start of the first minute (UTC).")
    minutes: int
    received: list[int]
    confirmed: list[int]


class DecisionView(BaseModel):
    """One recent delete decision from the audit log."""

    seq: int
    at: str | None
    event: str
    outcome: str
    actor: str | None
    study_uid: str | None
    channel: str | None
    reasons: list[str]
    sentence: str | None


class DeadLetterView(BaseModel):
    """A dead-lettered instance."""

    study_uid: str
    sop_instance_uid: str
    status: str | None
    reason: str | None
    attempts: int
    updated_at: str | None


class ArchiveView(BaseModel):
    """The archive's reachability by the last C-ECHO probe; ``reachable`` is null before the first probe."""

    peer: str
    reachable: bool | None
    checked_at: str | None
    latency_ms: float | None
    error: str | None
    probe_interval: float


class StatusView(BaseModel):
    """The numbers of the status page."""

    version: str
    generated_at: str
    counts: dict[str, int] = Field(description="Instances (every version) per state.")
    confirmed: int
    pending: int = Field(description="Received but not yet confirmed: received, failed, forwarded, missing-in-archive.")
    dead_lettered: int
    queue_depth: int = Field(description="Waiting to be forwarded: received or failed.")
    oldest_unconfirmed: OldestUnconfirmed | None
    throughput: Throughput
    recent_decisions: list[DecisionView]
    dead_letters: list[DeadLetterView]
    archive: ArchiveView


def _iso(value: datetime | None) -> str | None:
    utc = as_utc(value)
    return utc.isoformat() if utc is not None else None


def _minute_index(conn: Connection, column: Any, start: datetime) -> ColumnElement[int]:
    """Whole minutes from ``start`` to ``column``, computed by the database (SQLite or PostgreSQL)."""
    if conn.dialect.name == "sqlite":
        # SQLite keeps these times as naive UTC text; julianday counts days.
        start_text = start.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        return cast((func.julianday(column) - func.julianday(start_text)) * 1440, Integer)
    return cast(func.floor(extract("epoch", column - literal(start)) / 60), Integer)


def _per_minute(conn: Connection, column: Any, start: datetime) -> list[int]:
    index = _minute_index(conn, column, start).label("minute")
    rows = conn.execute(select(index, func.count().label("n")).where(column >= start).group_by(index)).all()
    buckets = [0] * WINDOW_MINUTES
    for minute, count in rows:
        if minute is not None and 0 <= int(minute) < WINDOW_MINUTES:
            buckets[int(minute)] += int(count)
    return buckets


def _oldest_unconfirmed(conn: Connection, now: datetime) -> OldestUnconfirmed | None:
    row = conn.execute(
        select(instances.c.study_uid, instances.c.sop_instance_uid, instances.c.state, instances.c.received_at)
        .where(instances.c.state.in_([s.value for s in PENDING_STATES]))
        .order_by(instances.c.received_at, instances.c.id)
        .limit(1)
    ).first()
    received = as_utc(row.received_at) if row is not None else None
    if row is None or received is None:
        return None
    return OldestUnconfirmed(
        study_uid=row.study_uid,
        sop_instance_uid=row.sop_instance_uid,
        state=row.state,
        received_at=received.isoformat(),
        age_seconds=round(max(0.0, (now - received).total_seconds()), 1),
    )


def _recent_decisions(conn: Connection) -> list[DecisionView]:
    rows = conn.execute(
        select(
            audit_log.c.seq,
            audit_log.c.at,
            audit_log.c.event,
            audit_log.c.outcome,
            audit_log.c.actor,
            audit_log.c.study_uid,
            audit_log.c.detail,
        )
        .where(audit_log.c.event.in_([AuditEvent.DELETE_PERMITTED.value, AuditEvent.DELETE_REFUSED.value]))
        .order_by(audit_log.c.seq.desc())
        .limit(RECENT_LIMIT)
    ).all()
    views = []
    for r in rows:
        try:
            detail = json.loads(r.detail) if r.detail else {}
        except ValueError:
            detail = {}
        detail = detail if isinstance(detail, dict) else {}
        views.append(
            DecisionView(
                seq=r.seq,
                at=_iso(r.at),
                event=r.event,
                outcome=r.outcome,
                actor=r.actor,
                study_uid=r.study_uid,
                channel=detail.get("channel"),
                reasons=[str(x) for x in detail.get("reasons", [])],
                sentence=detail.get("sentence"),
            )
        )
    return views


def _dead_letters(conn: Connection) -> list[DeadLetterView]:
    rows = conn.execute(
        select(
            instances.c.study_uid,
            instances.c.sop_instance_uid,
            instances.c.last_status,
            instances.c.last_error,
            instances.c.attempts,
            instances.c.updated_at,
        )
        .where(instances.c.state == InstanceState.DEAD_LETTERED.value)
        .order_by(instances.c.updated_at.desc(), instances.c.id.desc())
        .limit(RECENT_LIMIT)
    ).all()
    return [
        DeadLetterView(
            study_uid=r.study_uid,
            sop_instance_uid=r.sop_instance_uid,
            status=None if r.last_status is None else f"0x{r.last_status:04X}",
            reason=r.last_error,
            attempts=r.attempts,
            updated_at=_iso(r.updated_at),
        )
        for r in rows
    ]


def _archive_view(probe: ArchiveProbe) -> ArchiveView:
    last = probe.last
    return ArchiveView(
        peer=f"{probe.peer.ae_title}@{probe.peer.host}:{probe.peer.port}",
        reachable=None if last is None else last.reachable,
        checked_at=None if last is None else last.checked_at,
        latency_ms=None if last is None else last.latency_ms,
        error=None if last is None else last.error,
        probe_interval=probe.interval,
    )


def status_snapshot(ledger: Ledger, probe: ArchiveProbe) -> StatusView:
    """Everything the status page shows, read from the ledger now and from the probe's cache."""
    now = ledger.clock()
    start = (now - timedelta(minutes=WINDOW_MINUTES - 1)).replace(second=0, microsecond=0)
    with ledger.engine.connect() as conn:
        counts = {
            str(state): int(n) for state, n in conn.execute(select(instances.c.state, func.count()).group_by(instances.c.state)).tuples()
        }
        oldest = _oldest_unconfirmed(conn, now)
        throughput = Throughput(
            start=start.isoformat(),
            minutes=WINDOW_MINUTES,
            received=_per_minute(conn, instances.c.received_at, start),
            confirmed=_per_minute(conn, instances.c.confirmed_at, start),
        )
        decisions = _recent_decisions(conn)
        dead = _dead_letters(conn)
    return StatusView(
        version=__version__,
        generated_at=now.isoformat(),
        counts=counts,
        confirmed=counts.get(InstanceState.CONFIRMED.value, 0),
        pending=sum(counts.get(s.value, 0) for s in PENDING_STATES),
        dead_lettered=counts.get(InstanceState.DEAD_LETTERED.value, 0),
        queue_depth=sum(counts.get(s.value, 0) for s in QUEUE_STATES),
        oldest_unconfirmed=oldest,
        throughput=throughput,
        recent_decisions=decisions,
        dead_letters=dead,
        archive=_archive_view(probe),
    )


def add_status(app: FastAPI, ledger: Ledger, probe: ArchiveProbe, *, read_dependencies: Sequence[Any] = ()) -> None:
    """``GET /`` (the page), ``/static/*`` (its files) and ``GET /status`` (its numbers).

    ``read_dependencies`` are the ``Depends(...)`` that protect read endpoints, if any (none: open).
    """

    @app.get("/status", summary="The numbers of the status page.", dependencies=list(read_dependencies))
    def status() -> StatusView:
        return status_snapshot(ledger, probe)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
