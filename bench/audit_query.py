"""``python -m bench.audit_query``: a study's audit history on a ledger of one million records.

Builds a ledger (SQLite, and PostgreSQL when reachable) holding ``--records`` chained audit
records spread over ``--studies`` studies, then times ``guard audit --study``'s query
(``query_audit``) against the direct path: the same SELECT through the database driver with no
guard code. Also times ``guard audit verify`` (the whole chain walk). Prints a table.

    .venv/bin/python -m bench.audit_query                 # 1,000,000 records, SQLite and PostgreSQL
    .venv/bin/python -m bench.audit_query --records 200000 --no-postgres
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, insert, text

from guard.ledger.audit_query import query_audit
from guard.ledger.audit_verify import verify_chain
from guard.ledger.chain import GENESIS, record_hash
from guard.ledger.db import migrate, open_engine
from guard.ledger.ledger import Ledger
from guard.ledger.schema import audit_log

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 dbname=test"
EVENTS = ("instance.received", "instance.forwarded", "instance.confirmed", "commitment.requested", "commitment.reported")


def _rows(records: int, studies: int, batch: int) -> Any:
    """Chained audit rows in batches: mostly per-instance events of random studies, some without a study."""
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    prev = GENESIS
    rows: list[dict[str, Any]] = []
    for seq in range(1, records + 1):
        study = rng.randrange(studies)
        has_study = seq % 10 != 0
        fields = {
            "seq": seq,
            "at": start + timedelta(seconds=seq * 0.5),
            "event": EVENTS[seq % len(EVENTS)] if has_study else "association.accepted",
            "outcome": "success",
            "actor": "PACS" if seq % 2 else "ARCHIVE",
            "peer_address": "10.1.2.3",
            "patient_id": f"PAT{study:06d}" if has_study else None,
            "study_uid": f"1.2.826.0.1.3680043.10.1.{study}" if has_study else None,
            "series_uid": f"1.2.826.0.1.3680043.10.1.{study}.1" if has_study else None,
            "sop_instance_uid": f"1.2.826.0.1.3680043.10.1.{study}.1.{seq}" if has_study else None,
            "detail": json.dumps({"status": "0x0000", "attempt": 1}, sort_keys=True),
            "prev_hash": prev,
        }
        fields["hash"] = prev = record_hash(fields)
        rows.append(fields)
        if len(rows) == batch:
            yield rows
            rows = []
    if rows:
        yield rows


def _fill(engine: Engine, records: int, studies: int) -> float:
    started = time.monotonic()
    for rows in _rows(records, studies, 20000):
        with engine.begin() as conn:
            conn.execute(insert(audit_log), rows)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return time.monotonic() - started


def _median_ms(action: Callable[[str], Any], studies: list[str]) -> tuple[float, float]:
    times = []
    for study in studies:
        started = time.perf_counter()
        action(study)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def _measure(name: str, engine: Engine, direct: Callable[[str], Any], records: int, studies: int, samples: int) -> dict[str, Any]:
    print(f"{name}: writing {records:,} chained records over {studies:,} studies ...", flush=True)
    fill_s = _fill(engine, records, studies)
    ledger = Ledger(engine)
    rng = random.Random(11)
    picks = [f"1.2.826.0.1.3680043.10.1.{rng.randrange(studies)}" for _ in range(samples)]
    for study in picks[:5]:  # warm the cache as a running guard's would be
        query_audit(ledger, study_uid=study, limit=1000)
    guard_med, guard_p95 = _median_ms(lambda s: query_audit(ledger, study_uid=s, limit=1000), picks)
    direct_med, direct_p95 = _median_ms(direct, picks)
    lengths = [len(query_audit(ledger, study_uid=s, limit=1000)) for s in picks[:10]]
    print(f"{name}: verifying the whole chain ...", flush=True)
    started = time.monotonic()
    report = verify_chain(ledger)
    verify_s = time.monotonic() - started
    if not report.ok:
        msg = f"the benchmark's own chain does not verify: {report.broken}"
        raise RuntimeError(msg)
    return {
        "ledger": name,
        "records": records,
        "fill_s": fill_s,
        "history_records": statistics.median(lengths),
        "guard_ms": guard_med,
        "guard_p95_ms": guard_p95,
        "direct_ms": direct_med,
        "direct_p95_ms": direct_p95,
        "verify_s": verify_s,
        "verify_per_s": records / verify_s,
    }


def _sqlite(folder: Path, records: int, studies: int, samples: int) -> dict[str, Any]:
    import sqlite3  # noqa: PLC0415 - the direct path's driver

    path = folder / "ledger.sqlite"
    engine = open_engine(f"sqlite:///{path}")
    migrate(engine)
    raw = sqlite3.connect(path)
    sql = "SELECT * FROM audit_log WHERE study_uid = ? ORDER BY seq LIMIT 1000"
    try:
        return _measure("SQLite", engine, lambda s: raw.execute(sql, (s,)).fetchall(), records, studies, samples)
    finally:
        raw.close()
        engine.dispose()


def _postgres(records: int, studies: int, samples: int) -> dict[str, Any] | None:
    name = f"guard_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL not reachable, skipped: {exc}")
        return None
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            engine = open_engine(f"postgresql+psycopg://{admin.info.user}@127.0.0.1:5432/{name}")
            migrate(engine)
            with psycopg.connect(f"host=127.0.0.1 port=5432 dbname={name}") as raw:
                sql = "SELECT * FROM audit_log WHERE study_uid = %s ORDER BY seq LIMIT 1000"
                result = _measure("PostgreSQL", engine, lambda s: raw.execute(sql, (s,)).fetchall(), records, studies, samples)
            engine.dispose()
            return result
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def render(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = [
        (
            "| ledger | records | history (records) | guard query median / p95 | direct SELECT median / p95 | guard/direct"
            " | full chain verify |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['ledger']} | {r['records']:,} | {r['history_records']:.0f} | {r['guard_ms']:.2f} / {r['guard_p95_ms']:.2f} ms"
        f" | {r['direct_ms']:.2f} / {r['direct_p95_ms']:.2f} ms | {r['guard_ms'] / r['direct_ms']:.1f}"
        f" | {r['verify_s']:.0f} s ({r['verify_per_s']:,.0f} records/s) |"
        for r in results
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the audit query benchmark."""
    parser = argparse.ArgumentParser(prog="python -m bench.audit_query", description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=50, help="studies whose history is timed")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="guard-bench-audit-") as folder:
        results.append(_sqlite(Path(folder), args.records, args.studies, args.samples))
    if not args.no_postgres:
        pg = _postgres(args.records, args.studies, args.samples)
        if pg is not None:
            results.append(pg)
    print()
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
