"""A ledger in the middle of a long archive move: many confirmed instances, then a backlog still to forward."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from guard.ledger.schema import instances

#: Rows inserted per statement.
_CHUNK = 20000


def fill_backlog(engine: Engine, confirmed: int, waiting: int, *, node: str) -> None:
    """``confirmed`` confirmed instances, then ``waiting`` received ones (due now), all of ``node``; PostgreSQL analysed after.

    PostgreSQL's autovacuum would analyse a table this size by itself; SQLite is left without
    statistics, as the guard's ledger is in production.
    """
    now = datetime.now(UTC) - timedelta(seconds=1)
    common = {"version": 1, "study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2"}
    common |= {"transfer_syntax": "1.2.840.10008.1.2.1", "size": 1, "sha256": "0" * 64, "attempts": 0, "node": node}
    common |= {"calling_ae": "PACS", "peer_address": "127.0.0.1", "patient_id": "P"}
    common |= {"received_at": now, "updated_at": now, "next_attempt_at": now}
    total = confirmed + waiting
    for start in range(0, total, _CHUNK):
        rows = [
            {**common, "sop_instance_uid": f"1.2.3.4.{i}", "spool_path": f"s/{i}", "state": "confirmed" if i < confirmed else "received"}
            for i in range(start, min(total, start + _CHUNK))
        ]
        with engine.begin() as conn:
            conn.execute(instances.insert(), rows)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE instances"))
