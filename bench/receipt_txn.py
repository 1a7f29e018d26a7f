"""``python -m bench.receipt_txn``: the ledger transaction that records one received instance.

Runs, on a fresh ledger, ``--transactions`` receipts exactly as ``IngestService.store`` writes
them (``record_received`` and the ``instance.received`` audit record in one
``Ledger.transaction``), nothing else: no DICOM, no spool. The instances fall into studies of
``--per-study`` instances and series of ``--per-series``, so most receipts meet a known study
and series, as a C-STORE of a whole study does. Prints wall and CPU (this process) milliseconds
per transaction, the statements per transaction (PostgreSQL: those the engine sends through a
cursor; SQLite: those the library runs, as its trace callback sees them, some of them on the
driver's own cursor, ADR 0024), and
the round trips to the server: on PostgreSQL those statements plus the pool's pre-ping (one a
checkout), BEGIN and COMMIT (SQLite's BEGIN IMMEDIATE is one of its statements; it has no
server to go to).

PostgreSQL runs on a scratch database of its own (dropped afterwards); the machine may be
shared, so compare runs made one after the other, alternating::

    .venv/bin/python -m bench.receipt_txn --ledger sqlite --transactions 1000
    .venv/bin/python -m bench.receipt_txn --ledger postgresql --transactions 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, event

from guard.ledger.db import migrate, open_engine
from guard.ledger.instances import ReceivedInstance
from guard.ledger.ledger import Ledger
from guard.services.ingest import record_receipt
from tests.support.postgres import scratch_database

ROOT = "1.2.826.0.1.3680043.10.9"


@dataclass(frozen=True)
class Figures:
    """One run: how many receipts, and what each cost."""

    transactions: int
    wall_ms: float
    cpu_ms: float
    statements: float
    round_trips: float


def _item(n: int, per_study: int, per_series: int, run: int) -> ReceivedInstance:
    study = f"{ROOT}.{run}.{n // per_study}"
    series = f"{study}.{(n % per_study) // per_series}"
    return ReceivedInstance(
        sop_instance_uid=f"{series}.{n}",
        study_uid=study,
        series_uid=series,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1",
        size=524_288 + n,
        sha256=f"{n:064x}",
        spool_path=f"{study}/{series}.{n}.dcm",
        patient_id="PAT0001",
        modality="CT",
        calling_ae="PACS",
        peer_address="127.0.0.1",
    )


@contextmanager
def _counting(engine: Engine) -> Iterator[dict[str, int]]:
    """Count what ``engine`` sends while the block runs: cursor statements, checkouts (pre-pings), BEGINs and COMMITs."""
    count = dict.fromkeys(("statements", "checkouts", "begins", "commits"), 0)

    def counter(key: str) -> Any:
        def on_event(*_args: Any) -> None:
            count[key] += 1

        return on_event

    def on_statement(sql: str) -> None:
        if not sql.startswith("COMMIT"):  # as on PostgreSQL, the COMMIT is counted apart
            count["statements"] += 1

    def traced(dbapi_connection: Any, *_args: Any) -> None:
        count["checkouts"] += 1
        dbapi_connection.set_trace_callback(on_statement)

    # SQLite: every statement the library runs, including those on the driver's own cursor (ADR 0024).
    sqlite = engine.dialect.name == "sqlite"
    listeners = [
        (engine.pool, "checkout", traced) if sqlite else (engine, "before_cursor_execute", counter("statements")),
        *([] if sqlite else [(engine.pool, "checkout", counter("checkouts"))]),
        (engine, "begin", counter("begins")),
        (engine, "commit", counter("commits")),
    ]
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    try:
        yield count
    finally:
        for target, name, listener in listeners:
            event.remove(target, name, listener)
        if sqlite:
            with engine.connect() as conn:
                conn.connection.driver_connection.set_trace_callback(None)  # type: ignore[union-attr]


def run(engine: Engine, transactions: int, per_study: int, per_series: int, run_no: int) -> Figures:
    """Time ``transactions`` receipts of new instances on ``engine`` (after a short warm-up)."""
    ledger = Ledger(engine)
    for n in range(20):  # warm-up: compile the statements, fill the pool
        record_receipt(ledger, _item(n, per_study, per_series, 10_000 + run_no))
    items = [_item(n, per_study, per_series, run_no) for n in range(transactions)]
    with _counting(engine) as count:
        cpu, wall = time.process_time(), time.perf_counter()
        for item in items:
            record_receipt(ledger, item)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    trips = count["statements"]
    if engine.dialect.name == "postgresql":
        trips += count["checkouts"] + count["begins"] + count["commits"]
    return Figures(
        transactions, wall * 1000 / transactions, cpu * 1000 / transactions, count["statements"] / transactions, trips / transactions
    )


@contextmanager
def _engine(kind: str) -> Iterator[Engine]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-receipt-") as folder:
            engine = open_engine(f"sqlite:///{Path(folder) / 'ledger.sqlite'}")
            try:
                migrate(engine)
                yield engine
            finally:
                engine.dispose()
        return
    with scratch_database("bench_receipt") as (url, _admin):
        engine = open_engine(url)
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.receipt_txn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="runs on the same ledger, each of new instances")
    parser.add_argument("--per-study", type=int, default=100, help="instances per study (default 100)")
    parser.add_argument("--per-series", type=int, default=25, help="instances per series (default 25)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run and print one line per run, and the median when there are several."""
    args = parse_args(argv)
    # The guard's own audit lines would time the terminal, not the ledger.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    results: list[Figures] = []
    with _engine(args.ledger) as engine:
        for run_no in range(args.repeat):
            figures = run(engine, args.transactions, args.per_study, args.per_series, run_no)
            results.append(figures)
            print(
                f"{args.ledger:10} {figures.transactions} receipts: {figures.wall_ms:.3f} ms wall, "
                f"{figures.cpu_ms:.3f} ms CPU, {figures.statements:.2f} statements and "
                f"{figures.round_trips:.2f} round trips per transaction"
            )
    if len(results) > 1:
        wall = statistics.median(r.wall_ms for r in results)
        cpu = statistics.median(r.cpu_ms for r in results)
        print(f"{args.ledger:10} median of {len(results)}: {wall:.3f} ms wall, {cpu:.3f} ms CPU")


if __name__ == "__main__":
    main()
