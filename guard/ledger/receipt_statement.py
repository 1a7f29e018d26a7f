"""The receipt of an instance as one PostgreSQL statement (``record_received`` on PostgreSQL).

The C-STORE answer waits for the receipt's commit (no ack without durability), so every round
trip to the server is on the sender's critical path. SQLite runs the receipt as separate
statements (``guard.ledger.instances``); it has no network between them. On PostgreSQL the same
steps are data-modifying CTEs of one statement, with the same effects:

- ``newest``: the newest version of the SOP Instance UID and its digest;
- ``fresh``: one row (the next version) unless the newest has the same digest (a duplicate,
  which changes nothing: every step below reads ``fresh`` and does nothing without it);
- ``superseded``: the older versions still waiting for forwarding, marked superseded;
- ``study``: a new study, or the known one received again (``last_received_at`` moves on,
  ``deleted_at`` is cleared, ``patient_id`` and ``first_received_at`` stay as first recorded);
- ``known_series``: a new series, nothing for a known one;
- ``inserted``: the instance row.

Every CTE sees the snapshot the statement began with, as the separate statements of SQLite see
their own writes only where it makes no difference here: no step reads a row another step
writes (``superseded`` cannot touch the row ``inserted`` adds). The ledger has no foreign keys
between these tables. The statement answers the newest version before it (None: the instance
is new) and the version inserted (None: a duplicate).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, bindparam, exists, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql

from guard.domain.states import CLAIMABLE_STATES, InstanceState
from guard.ledger.schema import instances, series, studies

#: The parameters of the statement, other than ``now`` and ``node``: the fields of a ``ReceivedInstance``.
ITEM_FIELDS = (
    "sop_instance_uid",
    "study_uid",
    "series_uid",
    "sop_class_uid",
    "transfer_syntax",
    "size",
    "sha256",
    "spool_path",
    "patient_id",
    "modality",
    "calling_ae",
    "peer_address",
)


#: The prefix of every parameter name: a parameter named like a column would also be taken as a
#: value to set by the UPDATE and INSERTs of the statement (SQLAlchemy's execute-time values).
PREFIX = "r_"


def _param(name: str, column: Any) -> Any:
    """A parameter typed as ``column`` (psycopg needs the type of a value selected rather than inserted)."""
    return bindparam(PREFIX + name, type_=column.type)


def build_receipt() -> Select[tuple[int | None, int | None]]:
    """The statement; parameters ``ITEM_FIELDS``, ``now`` and ``node`` (each after ``PREFIX``).

    It answers one row: the newest version before it and the version it inserted.
    """
    now = _param("now", instances.c.received_at)
    uid = _param("sop_instance_uid", instances.c.sop_instance_uid)
    study_uid = _param("study_uid", instances.c.study_uid)
    series_uid = _param("series_uid", instances.c.series_uid)
    patient_id = _param("patient_id", instances.c.patient_id)
    newest = (
        select(instances.c.version, instances.c.sha256)
        .where(instances.c.sop_instance_uid == uid)
        .order_by(instances.c.version.desc())
        .limit(1)
        .cte("newest")
    )
    newest_version = select(newest.c.version).scalar_subquery()
    duplicate = exists().where(newest.c.sha256 == _param("sha256", instances.c.sha256))
    fresh = select((func.coalesce(newest_version, 0) + 1).label("version")).where(~duplicate).cte("fresh")
    # The states as separate parameters, not an expanding IN: that one is rewritten at every execution.
    waiting = instances.c.state.in_([literal(state.value, instances.c.state.type) for state in CLAIMABLE_STATES])
    superseded = (
        update(instances)
        .where(instances.c.sop_instance_uid == uid, waiting, exists(select(fresh.c.version)))
        .values(state=InstanceState.SUPERSEDED.value, updated_at=now)
        .cte("superseded")
    )
    study_insert = postgresql.insert(studies).from_select(
        ["study_uid", "patient_id", "first_received_at", "last_received_at"], select(study_uid, patient_id, now, now).select_from(fresh)
    )
    # A new study, or the known one received again. An instance arriving after a delete makes
    # the study live again (a new state to protect).
    study = study_insert.on_conflict_do_update(
        index_elements=[studies.c.study_uid], set_={"last_received_at": study_insert.excluded.last_received_at, "deleted_at": None}
    ).cte("study")
    known_series = (
        postgresql.insert(series)
        .from_select(
            ["series_uid", "study_uid", "modality", "first_received_at"],
            select(series_uid, study_uid, _param("modality", series.c.modality), now).select_from(fresh),
        )
        .on_conflict_do_nothing()
        .cte("known_series")
    )
    row = {
        "sop_instance_uid": uid,
        "version": fresh.c.version,
        "study_uid": study_uid,
        "series_uid": series_uid,
        **{name: _param(name, instances.c[name]) for name in ("sop_class_uid", "transfer_syntax", "size", "sha256", "spool_path")},
        "patient_id": patient_id,
        "calling_ae": _param("calling_ae", instances.c.calling_ae),
        "peer_address": _param("peer_address", instances.c.peer_address),
        "node": _param("node", instances.c.node),
        "state": literal(InstanceState.RECEIVED.value, instances.c.state.type),
        "attempts": literal(0, instances.c.attempts.type),
        "received_at": now,
        "updated_at": now,
        "next_attempt_at": now,
    }
    inserted = (
        insert(instances).from_select(list(row), select(*row.values()).select_from(fresh)).returning(instances.c.version).cte("inserted")
    )
    answer = select(newest_version.label("newest"), select(inserted.c.version).scalar_subquery().label("version"))
    return answer.add_cte(superseded, study, known_series)
