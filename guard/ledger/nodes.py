"""The guard nodes sharing this ledger: each one's row, heartbeat and queue (``guard status``, ``/status``).

A node registers at start, then records every ``node.heartbeat_seconds`` that it is alive and
whether it is ready; a clean stop marks it stopped. A node not heard from for three heartbeats
is shown as ``lost`` (killed, or cut off from the ledger). An SQLite ledger serves one node
only: ``register_node`` refuses a second one while the first is alive (see ``SingleNodeError``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update

from guard.domain.errors import ConfigError
from guard.domain.states import CLAIMABLE_STATES, InstanceState
from guard.ledger.instances import as_utc
from guard.ledger.ledger import Ledger
from guard.ledger.schema import instances, nodes

#: A node is lost when it has not been heard from for this many heartbeats.
LOST_AFTER_BEATS = 3


class SingleNodeError(ConfigError):
    """An SQLite ledger serves one guard node: another node is running on it; use PostgreSQL for several nodes."""


@dataclass(frozen=True)
class NodeInfo:
    """What a node tells about itself when it starts."""

    node: str
    ae_title: str
    version: str
    pid: int
    dicom_port: int | None = None
    http_port: int | None = None


@dataclass(frozen=True)
class NodeStatus:
    """One node as the ledger knows it."""

    node: str
    state: str  # running | draining | stopped | lost
    ready: bool
    last_seen_at: datetime
    started_at: datetime
    ae_title: str
    dicom_port: int | None
    http_port: int | None
    version: str
    #: Instances this node received that wait for forwarding (held by it when the spool is node-local).
    queue: int
    #: Instances this node received that are forwarded but not yet confirmed.
    unconfirmed: int


def register_node(ledger: Ledger, info: NodeInfo, heartbeat: timedelta) -> None:
    """Record that ``info.node`` starts; on SQLite, refuse when another node is alive on the same ledger."""
    with ledger.transaction() as tx:
        now = tx.clock()
        if tx.conn.dialect.name == "sqlite":
            others = tx.conn.execute(
                select(nodes.c.node, nodes.c.last_seen_at).where(
                    nodes.c.node != info.node, nodes.c.stopped_at.is_(None), nodes.c.last_seen_at > now - LOST_AFTER_BEATS * heartbeat
                )
            ).first()
            if others is not None:
                msg = (
                    f"the SQLite ledger is in use by guard node {others.node!r} (last seen {as_utc(others.last_seen_at)}):"
                    " an SQLite ledger serves one node; run several nodes on a PostgreSQL ledger (ledger.url)"
                )
                raise SingleNodeError(msg)
        values = {
            "started_at": now,
            "last_seen_at": now,
            "stopped_at": None,
            "ready": 0,
            "state": "running",
            "ae_title": info.ae_title,
            "dicom_port": info.dicom_port,
            "http_port": info.http_port,
            "version": info.version,
            "pid": info.pid,
        }
        if not tx.conn.execute(update(nodes).where(nodes.c.node == info.node).values(**values)).rowcount:
            tx.conn.execute(insert(nodes).values(node=info.node, **values))


def heartbeat(ledger: Ledger, node: str, *, ready: bool, state: str = "running", **ports: int | None) -> None:
    """Record that ``node`` is alive now, and whether it is ready (and its ports once bound)."""
    with ledger.transaction() as tx:
        values = {"last_seen_at": tx.clock(), "ready": int(ready), "state": state, **{k: v for k, v in ports.items() if v is not None}}
        tx.conn.execute(update(nodes).where(nodes.c.node == node).values(**values))


def mark_stopped(ledger: Ledger, node: str) -> None:
    """Record a clean stop."""
    with ledger.transaction() as tx:
        now = tx.clock()
        tx.conn.execute(update(nodes).where(nodes.c.node == node).values(stopped_at=now, last_seen_at=now, ready=0, state="stopped"))


def list_nodes(ledger: Ledger, heartbeat_interval: timedelta) -> list[NodeStatus]:
    """Every node that ever ran on this ledger, with its health and queue, by name."""
    now = ledger.clock()
    waiting = [*CLAIMABLE_STATES]
    with ledger.read() as conn:
        rows = conn.execute(select(nodes).order_by(nodes.c.node)).all()
        counts = conn.execute(
            select(instances.c.node, instances.c.state, func.count().label("n"))
            .where(instances.c.state.in_([*waiting, InstanceState.FORWARDED.value]))
            .group_by(instances.c.node, instances.c.state)
        ).all()
    queue: dict[str | None, int] = {}
    unconfirmed: dict[str | None, int] = {}
    for row in counts:
        into = unconfirmed if row.state == InstanceState.FORWARDED.value else queue
        into[row.node] = into.get(row.node, 0) + int(row.n)
    result = []
    for row in rows:
        seen = as_utc(row.last_seen_at) or now
        lost = row.stopped_at is None and now - seen > LOST_AFTER_BEATS * heartbeat_interval
        result.append(
            NodeStatus(
                node=row.node,
                state="lost" if lost else str(row.state),
                ready=bool(row.ready) and not lost and row.stopped_at is None,
                last_seen_at=seen,
                started_at=as_utc(row.started_at) or seen,
                ae_title=row.ae_title,
                dicom_port=row.dicom_port,
                http_port=row.http_port,
                version=row.version,
                queue=queue.get(row.node, 0),
                unconfirmed=unconfirmed.get(row.node, 0),
            )
        )
    return result
