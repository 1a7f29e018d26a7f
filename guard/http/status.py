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

from collections.abc import Sequence
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from guard import __version__
from guard.dicom.probe import ArchiveProbe
from guard.domain.states import InstanceState
from guard.ledger.dashboard import PENDING_STATES, QUEUE_STATES, DeadLetterFact, DecisionFact, OldestPending, status_facts
from guard.ledger.leases import lease_holders
from guard.ledger.ledger import Ledger
from guard.ledger.nodes import NodeStatus, list_nodes

STATIC_DIR = Path(str(files("guard.http") / "static"))
#: Minutes of throughput the chart shows.
WINDOW_MINUTES = 60
#: Most delete decisions and dead letters the page lists.
RECENT_LIMIT = 20
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


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


class NodeView(BaseModel):
    """One guard node on this ledger: its health by its own heartbeat, and its queue."""

    node: str
    state: str = Field(description="running, draining, stopped, or lost (not heard from for three heartbeats).")
    ready: bool
    last_seen_at: str
    started_at: str
    ae_title: str
    dicom_port: int | None
    http_port: int | None
    version: str
    queue: int = Field(description="Instances this node received that wait for forwarding.")
    unconfirmed: int = Field(description="Instances this node received that are forwarded, not yet confirmed.")


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
    node: str | None = Field(description="The node that answered.")
    nodes: list[NodeView]
    leases: dict[str, str | None] = Field(description="Cluster-wide task -> node holding its lease now (null: none).")


def _node_view(item: NodeStatus) -> NodeView:
    return NodeView(
        node=item.node,
        state=item.state,
        ready=item.ready,
        last_seen_at=item.last_seen_at.isoformat(),
        started_at=item.started_at.isoformat(),
        ae_title=item.ae_title,
        dicom_port=item.dicom_port,
        http_port=item.http_port,
        version=item.version,
        queue=item.queue,
        unconfirmed=item.unconfirmed,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _oldest(fact: OldestPending | None, now: datetime) -> OldestUnconfirmed | None:
    if fact is None:
        return None
    return OldestUnconfirmed(
        study_uid=fact.study_uid,
        sop_instance_uid=fact.sop_instance_uid,
        state=fact.state,
        received_at=fact.received_at.isoformat(),
        age_seconds=round(max(0.0, (now - fact.received_at).total_seconds()), 1),
    )


def _decision(fact: DecisionFact) -> DecisionView:
    return DecisionView(
        seq=fact.seq,
        at=_iso(fact.at),
        event=fact.event,
        outcome=fact.outcome,
        actor=fact.actor,
        study_uid=fact.study_uid,
        channel=fact.channel,
        reasons=list(fact.reasons),
        sentence=fact.sentence,
    )


def _dead_letter(fact: DeadLetterFact) -> DeadLetterView:
    return DeadLetterView(
        study_uid=fact.study_uid,
        sop_instance_uid=fact.sop_instance_uid,
        status=None if fact.status is None else f"0x{fact.status:04X}",
        reason=fact.reason,
        attempts=fact.attempts,
        updated_at=_iso(fact.updated_at),
    )


def _archive_view(probe: ArchiveProbe) -> ArchiveView:
    last = probe.last
    return ArchiveView(
        peer=probe.where,
        reachable=None if last is None else last.reachable,
        checked_at=None if last is None else last.checked_at,
        latency_ms=None if last is None else last.latency_ms,
        error=None if last is None else last.error,
        probe_interval=probe.interval,
    )


def status_snapshot(ledger: Ledger, probe: ArchiveProbe, heartbeat: timedelta = timedelta(seconds=5)) -> StatusView:
    """Everything the status page shows, read from the ledger now and from the probe's cache (nodes lost after three ``heartbeat``)."""
    now = ledger.clock()
    start = (now - timedelta(minutes=WINDOW_MINUTES - 1)).replace(second=0, microsecond=0)
    facts = status_facts(ledger, start=start, minutes=WINDOW_MINUTES, recent=RECENT_LIMIT)
    counts = facts.counts
    return StatusView(
        version=__version__,
        generated_at=now.isoformat(),
        counts=counts,
        confirmed=counts.get(InstanceState.CONFIRMED.value, 0),
        pending=sum(counts.get(s.value, 0) for s in PENDING_STATES),
        dead_lettered=counts.get(InstanceState.DEAD_LETTERED.value, 0),
        queue_depth=sum(counts.get(s.value, 0) for s in QUEUE_STATES),
        oldest_unconfirmed=_oldest(facts.oldest_pending, now),
        throughput=Throughput(
            start=start.isoformat(),
            minutes=WINDOW_MINUTES,
            received=facts.received_per_minute,
            confirmed=facts.confirmed_per_minute,
        ),
        recent_decisions=[_decision(d) for d in facts.recent_decisions],
        dead_letters=[_dead_letter(d) for d in facts.dead_letters],
        archive=_archive_view(probe),
        node=ledger.node,
        nodes=[_node_view(n) for n in list_nodes(ledger, heartbeat)],
        leases=lease_holders(ledger),
    )


def add_status(
    app: FastAPI, ledger: Ledger, probe: ArchiveProbe, *, read_dependencies: Sequence[Any] = (), heartbeat: timedelta = timedelta(seconds=5)
) -> None:
    """``GET /`` (the page), ``/static/*`` (its files) and ``GET /status`` (its numbers).

    ``read_dependencies`` are the ``Depends(...)`` that protect read endpoints, if any (none: open).
    """

    @app.get("/status", summary="The numbers of the status page.", dependencies=list(read_dependencies))
    def status() -> StatusView:
        return status_snapshot(ledger, probe, heartbeat)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
