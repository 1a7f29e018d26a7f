"""Ledger queries for received instances: ingest, claims for forwarding, outcomes, status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Join, Row, Select, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import sqlite

from guard.domain.states import CLAIMABLE_STATES, AuditEvent, InstanceState, Outcome
from guard.ledger.audit import Transaction
from guard.ledger.driver import DriverStatement
from guard.ledger.ledger import Ledger
from guard.ledger.receipt_statement import ITEM_FIELDS, PREFIX, build_receipt
from guard.ledger.schema import CLAIMABLE, CLAIMABLE_INDEX, instances, series, studies


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time in the ledger is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ReceivedInstance:
    """What ingest knows about one instance that is already durable in the spool."""

    sop_instance_uid: str
    study_uid: str
    series_uid: str
    sop_class_uid: str
    transfer_syntax: str
    size: int
    sha256: str
    spool_path: str
    patient_id: str | None
    modality: str | None
    calling_ae: str
    peer_address: str


class Receipt(StrEnum):
    """What recording a received instance amounted to."""

    NEW = "new"
    DUPLICATE = "duplicate"
    NEW_VERSION = "new-version"


@dataclass(frozen=True)
class Claim:
    """An instance claimed by a forwarding worker."""

    id: int
    sop_instance_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax: str
    spool_path: str
    attempts: int
    received_at: datetime
    patient_id: str | None


# The statements of a receipt, built once: building a statement with ``.values()`` on every
# C-STORE cost more CPU than running it (SQLAlchemy coerces and keys each new object). Except on
# PostgreSQL (one statement, below) they run on SQLite's own cursor (``guard.ledger.driver``).
_NEWEST = DriverStatement(
    select(instances.c.version, instances.c.sha256)
    .where(instances.c.sop_instance_uid == bindparam("b_sop_instance_uid"))
    .order_by(instances.c.version.desc())
    .limit(1)
)
_SUPERSEDE = (
    update(instances)
    .where(instances.c.sop_instance_uid == bindparam("b_sop_instance_uid"), instances.c.state.in_(CLAIMABLE_STATES))
    .values(state=InstanceState.SUPERSEDED.value, updated_at=bindparam("b_now"))
)
_INSERT_INSTANCE = DriverStatement(insert(instances))
_PG_RECEIPT = build_receipt()
_STUDY_INSERT = sqlite.insert(studies)
# A new study, or the known one received again. An instance arriving after a delete makes the
# study live again (a new state to protect).
_STUDY_UPSERT = DriverStatement(
    _STUDY_INSERT.on_conflict_do_update(
        index_elements=[studies.c.study_uid], set_={"last_received_at": _STUDY_INSERT.excluded.last_received_at, "deleted_at": None}
    )
)
_KNOWN_SERIES = DriverStatement(sqlite.insert(series).on_conflict_do_nothing())


def record_received(tx: Transaction, item: ReceivedInstance) -> tuple[Receipt, int]:
    """Record a durable instance; return what it was and its version.

    Same SOP Instance UID and same digest as the newest version: a duplicate, nothing changes.
    Another digest: a new version, which goes through forwarding again; older versions that
    were still waiting are marked superseded so the archive is not sent stale data.
    """
    now = tx.clock()
    if tx.conn.dialect.name == "postgresql":
        return _record_received_in_one_statement(tx, item, now)
    newest = _NEWEST.first(tx.conn, {"b_sop_instance_uid": item.sop_instance_uid})
    if newest is not None and newest[1] == item.sha256:
        return Receipt.DUPLICATE, int(newest[0])
    version = 1 if newest is None else int(newest[0]) + 1
    if newest is not None:
        tx.conn.execute(_SUPERSEDE, {"b_sop_instance_uid": item.sop_instance_uid, "b_now": now})
    _STUDY_UPSERT.execute(
        tx.conn, {"study_uid": item.study_uid, "patient_id": item.patient_id, "first_received_at": now, "last_received_at": now}
    )
    _KNOWN_SERIES.execute(
        tx.conn, {"series_uid": item.series_uid, "study_uid": item.study_uid, "modality": item.modality, "first_received_at": now}
    )
    _INSERT_INSTANCE.execute(
        tx.conn,
        {
            "sop_instance_uid": item.sop_instance_uid,
            "version": version,
            "study_uid": item.study_uid,
            "series_uid": item.series_uid,
            "sop_class_uid": item.sop_class_uid,
            "transfer_syntax": item.transfer_syntax,
            "size": item.size,
            "sha256": item.sha256,
            "spool_path": item.spool_path,
            "patient_id": item.patient_id,
            "calling_ae": item.calling_ae,
            "peer_address": item.peer_address,
            "node": tx.node,
            "state": InstanceState.RECEIVED.value,
            "attempts": 0,
            "received_at": now,
            "updated_at": now,
            "next_attempt_at": now,
        },
    )
    return (Receipt.NEW if newest is None else Receipt.NEW_VERSION), version


def _record_received_in_one_statement(tx: Transaction, item: ReceivedInstance, now: datetime) -> tuple[Receipt, int]:
    """``record_received`` on PostgreSQL: the same steps in one round trip (``guard.ledger.receipt_statement``)."""
    params = {PREFIX + name: getattr(item, name) for name in ITEM_FIELDS}
    answer = tx.conn.execute(_PG_RECEIPT, {**params, PREFIX + "now": now, PREFIX + "node": tx.node}).one()
    if answer.version is None:
        return Receipt.DUPLICATE, int(answer.newest)
    return (Receipt.NEW if answer.newest is None else Receipt.NEW_VERSION), int(answer.version)


def claimable(now: datetime, limit: int, holder: list[ColumnElement[bool]]) -> Select[Any]:
    """The first ``limit`` instances due for forwarding at ``now``, in the order they came, read through ``ix_instances_claimable``."""
    return (
        select(instances)
        # SQLite, which keeps no statistics, would otherwise read and sort the whole backlog (``open_engine``).
        .with_hint(instances, f"INDEXED BY {CLAIMABLE_INDEX}", "sqlite")
        .where(
            CLAIMABLE,
            instances.c.next_attempt_at <= now,
            or_(instances.c.lease_expires_at.is_(None), instances.c.lease_expires_at < now),
            *holder,
        )
        .order_by(instances.c.id)
        .limit(limit)
    )


def claim_pending(ledger: Ledger, owner: str, limit: int, lease: timedelta, *, held_by: str | None = None) -> list[Claim]:
    """Claim up to ``limit`` instances due for forwarding, under a lease held by ``owner``.

    A lease that was not renewed in time (its worker crashed or was killed) expires and the
    instance can be claimed again; ``FOR UPDATE SKIP LOCKED`` lets PostgreSQL workers (of every
    node) claim in parallel, SQLite serialises them with ``BEGIN IMMEDIATE``. ``held_by`` (a
    node-local spool) claims only what that node received (or rows from before nodes existed).
    """
    with ledger.transaction() as tx:
        now = tx.clock()
        holder = [] if held_by is None else [or_(instances.c.node == held_by, instances.c.node.is_(None))]
        rows = tx.conn.execute(claimable(now, limit, holder).with_for_update(skip_locked=True)).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        tx.conn.execute(
            update(instances)
            .where(instances.c.id.in_(ids))
            .values(lease_owner=owner, lease_expires_at=now + lease, attempts=instances.c.attempts + 1, updated_at=now),
        )
    return [
        Claim(
            id=r.id,
            sop_instance_uid=r.sop_instance_uid,
            study_uid=r.study_uid,
            sop_class_uid=r.sop_class_uid,
            transfer_syntax=r.transfer_syntax,
            spool_path=r.spool_path,
            attempts=r.attempts + 1,
            received_at=as_utc(r.received_at) or now,
            patient_id=r.patient_id,
        )
        for r in rows
    ]


def renew_leases(ledger: Ledger, owner: str, ids: list[int], lease: timedelta) -> int:
    """Extend the leases ``owner`` holds on ``ids``; return how many are still held."""
    if not ids:
        return 0
    with ledger.transaction() as tx:
        now = tx.clock()
        result = tx.conn.execute(
            update(instances)
            .where(instances.c.id.in_(ids), instances.c.lease_owner == owner, instances.c.state.in_(CLAIMABLE_STATES))
            .values(lease_expires_at=now + lease),
        )
    return int(result.rowcount)


def release_claims(ledger: Ledger, owner: str, ids: list[int]) -> None:
    """Give back claims not attempted (on shutdown), without counting an attempt."""
    if not ids:
        return
    with ledger.transaction() as tx:
        tx.conn.execute(
            update(instances)
            .where(
                instances.c.id.in_(ids),
                instances.c.lease_owner == owner,
                instances.c.state.in_(CLAIMABLE_STATES),
                instances.c.attempts > 0,
            )
            .values(lease_owner=None, lease_expires_at=None, attempts=instances.c.attempts - 1),
        )


# Built once; the columns to set come with the parameters (one compiled form per set of columns).
_SETTLE = update(instances).where(
    instances.c.id == bindparam("b_id"),
    instances.c.lease_owner == bindparam("b_owner"),
    instances.c.attempts == bindparam("b_attempts"),
    instances.c.lease_expires_at > bindparam("b_now"),
    instances.c.state.in_(CLAIMABLE_STATES),
)


def _settle(tx: Transaction, claim: Claim, owner: str, values: dict[str, Any]) -> bool:
    """Write an outcome for a claim if ``owner`` still holds it, unexpired, at the claim's attempt; False if the lease was lost.

    Owner, attempt (the claim's epoch: every claim counts one) and expiry together fence the
    outcome: a worker whose lease expired, on any node, cannot mark the instance forwarded,
    even when nobody has claimed it since (then it is simply sent again, which is harmless).
    """
    now = tx.clock()
    params = {"b_id": claim.id, "b_owner": owner, "b_attempts": claim.attempts, "b_now": now}
    result = tx.conn.execute(_SETTLE, {**params, "lease_owner": None, "lease_expires_at": None, "updated_at": now, **values})
    return bool(result.rowcount)


def subject_of(row: Row[Any]) -> dict[str, Any]:
    """The study, instance and patient of an instance row, for an audit record."""
    return {"study_uid": row.study_uid, "sop_instance_uid": row.sop_instance_uid, "patient_id": row.patient_id}


def _subject(claim: Claim) -> dict[str, Any]:
    return {"study_uid": claim.study_uid, "sop_instance_uid": claim.sop_instance_uid, "patient_id": claim.patient_id}


def mark_forwarded(tx: Transaction, claim: Claim, owner: str, *, status: int, archive_ae: str) -> bool:
    """The archive answered the C-STORE with Success (or a warning)."""
    if not _settle(
        tx, claim, owner, {"state": InstanceState.FORWARDED.value, "last_status": status, "last_error": None, "forwarded_at": tx.clock()}
    ):
        return False
    tx.audit(
        AuditEvent.INSTANCE_FORWARDED, actor=archive_ae, detail={"status": f"0x{status:04X}", "attempt": claim.attempts}, **_subject(claim)
    )
    return True


def mark_failed(tx: Transaction, claim: Claim, owner: str, *, status: int | None, error: str, retry_at: datetime) -> bool:
    """A transient failure: try again at ``retry_at``."""
    if not _settle(
        tx, claim, owner, {"state": InstanceState.FAILED.value, "last_status": status, "last_error": error, "next_attempt_at": retry_at}
    ):
        return False
    detail = {
        "error": error,
        "attempt": claim.attempts,
        "retry_at": retry_at.isoformat(),
        "status": None if status is None else f"0x{status:04X}",
    }
    tx.audit(AuditEvent.INSTANCE_FAILED, Outcome.FAILURE, detail=detail, **_subject(claim))
    return True


def mark_dead_lettered(tx: Transaction, claim: Claim, owner: str, *, status: int | None, reason: str) -> bool:
    """A permanent failure, or too many attempts: stop and wait for a person."""
    if not _settle(tx, claim, owner, {"state": InstanceState.DEAD_LETTERED.value, "last_status": status, "last_error": reason}):
        return False
    detail = {"reason": reason, "attempts": claim.attempts, "status": None if status is None else f"0x{status:04X}"}
    tx.audit(AuditEvent.INSTANCE_DEAD_LETTERED, Outcome.FAILURE, detail=detail, **_subject(claim))
    return True


def back_to_forwarding(tx: Transaction, instance_id: int, **values: Any) -> None:
    """Put an instance back in the forwarding queue, forgetting claims and earlier proofs.

    Used for dead letters re-queued by a person, for instances the archive reported failed or
    did not list, and for those found missing later. ``values`` adds columns to set
    (``resends``, ``last_error``).
    """
    now = tx.clock()
    tx.conn.execute(
        update(instances)
        .where(instances.c.id == instance_id)
        .values(
            state=InstanceState.RECEIVED.value,
            attempts=0,
            next_attempt_at=now,
            updated_at=now,
            lease_owner=None,
            lease_expires_at=None,
            commit_transaction_uid=None,
            commit_confirmed_at=None,
            find_confirmed_at=None,
            confirm_next_at=None,
            confirmed_at=None,
            **values,
        ),
    )


def requeue_dead_letters(ledger: Ledger, *, study_uid: str | None, actor: str) -> int:
    """Put dead-lettered instances (of one study, or all) back into forwarding."""
    with ledger.transaction() as tx:
        cond = [instances.c.state == InstanceState.DEAD_LETTERED.value]
        if study_uid is not None:
            cond.append(instances.c.study_uid == study_uid)
        rows = tx.conn.execute(select(instances.c.id, instances.c.study_uid, instances.c.sop_instance_uid).where(and_(*cond))).all()
        for row in rows:
            back_to_forwarding(tx, row.id)
            tx.audit(AuditEvent.INSTANCE_REQUEUED, actor=actor, study_uid=row.study_uid, sop_instance_uid=row.sop_instance_uid)
    return len(rows)


def newest_versions(condition: ColumnElement[bool]) -> Join:
    """``instances`` restricted to the newest version of each SOP Instance matching ``condition``."""
    newest = (
        select(instances.c.sop_instance_uid, func.max(instances.c.version).label("version"))
        .where(condition)
        .group_by(instances.c.sop_instance_uid)
        .subquery()
    )
    return instances.join(newest, and_(instances.c.sop_instance_uid == newest.c.sop_instance_uid, instances.c.version == newest.c.version))


@dataclass(frozen=True)
class RecentStudy:
    """A study and when its last instance arrived."""

    study_uid: str
    patient_id: str | None
    last_received_at: str


@dataclass(frozen=True)
class Overview:
    """The whole ledger at a glance: instances per state and the most recent studies."""

    counts: dict[str, int]
    recent_studies: list[RecentStudy]


def overview(ledger: Ledger, limit: int = 10) -> Overview:
    """Counts per state over every instance, and the studies received most recently."""
    with ledger.read() as conn:
        counts = {r.state: int(r.n) for r in conn.execute(select(instances.c.state, func.count().label("n")).group_by(instances.c.state))}
        recent = conn.execute(
            select(studies.c.study_uid, studies.c.patient_id, studies.c.last_received_at)
            .order_by(studies.c.last_received_at.desc())
            .limit(limit),
        ).all()
    return Overview(
        counts=counts,
        recent_studies=[
            RecentStudy(r.study_uid, r.patient_id, (as_utc(r.last_received_at) or r.last_received_at).isoformat()) for r in recent
        ],
    )


def study_facts(ledger: Ledger, study_uid: str) -> dict[str, str]:
    """SOP Instance UID -> state of its newest version, for every instance of the study."""
    joined = newest_versions(instances.c.study_uid == study_uid)
    with ledger.read() as conn:
        rows = conn.execute(select(instances.c.sop_instance_uid, instances.c.state).select_from(joined))
        return dict(rows.all())


def mark_study_deleted(tx: Transaction, study_uid: str) -> None:
    """Record that a permitted delete of the study was carried out."""
    tx.conn.execute(update(studies).where(studies.c.study_uid == study_uid).values(deleted_at=tx.clock()))


def study_deleted_at(ledger: Ledger, study_uid: str) -> datetime | None:
    """When a permitted delete of the study was carried out, if it was and nothing arrived since."""
    with ledger.read() as conn:
        return as_utc(conn.execute(select(studies.c.deleted_at).where(studies.c.study_uid == study_uid)).scalar())
