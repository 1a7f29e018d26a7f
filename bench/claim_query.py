"""``python -m bench.claim_query``: what one forwarding claim costs as the ledger grows.

A ledger in the middle of a long archive move holds many instances the archive has confirmed
and a backlog still to forward. This fills a fresh ledger with ``--confirmed`` confirmed
instances followed by ``--waiting`` received ones, then times ``claim_pending`` (a claim of
``--batch`` instances, as a forwarding worker makes it) and gives the claims back each time, so
every round claims from the same backlog. Prints wall milliseconds per claim, for each ledger
size in ``--confirmed``.

PostgreSQL runs on a scratch database of its own, analysed after filling (its autovacuum would
do that); SQLite is left without statistics, as the guard's ledger is in production::

    .venv/bin/python -m bench.claim_query --ledger sqlite postgresql --confirmed 10000 100000
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import structlog
from sqlalchemy import Engine

from guard.ledger.db import migrate, open_engine
from guard.ledger.instances import claim_pending, release_claims
from guard.ledger.ledger import Ledger
from tests.support.backlog import fill_backlog
from tests.support.postgres import scratch_database

SQLITE, POSTGRESQL = "sqlite", "postgresql"


@contextmanager
def _engine(ledger: str) -> Iterator[Engine]:
    if ledger == POSTGRESQL:
        with scratch_database("guard_claims") as (url, _admin):
            engine = open_engine(url)
            try:
                yield engine
            finally:
                engine.dispose()
        return
    with tempfile.TemporaryDirectory(prefix="guard-claims-") as folder:
        engine = open_engine(f"sqlite:///{Path(folder) / 'ledger.sqlite'}")
        try:
            yield engine
        finally:
            engine.dispose()


def measure(ledger: str, confirmed: int, waiting: int, batch: int, rounds: int) -> float:
    """Median wall milliseconds of one claim of ``batch`` from a ledger filled by ``fill_backlog``."""
    with _engine(ledger) as engine:
        migrate(engine)
        fill_backlog(engine, confirmed, waiting, node="bench")
        book = Ledger(engine, node="bench")
        lease = timedelta(seconds=60)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            claims = claim_pending(book, "bench:0", batch, lease, held_by="bench")
            times.append((time.perf_counter() - started) * 1000)
            if len(claims) != batch:
                msg = f"claimed {len(claims)} of {batch}"
                raise RuntimeError(msg)
            release_claims(book, "bench:0", [c.id for c in claims])
        return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Measure each ledger at each size and print one line each."""
    parser = argparse.ArgumentParser(prog="python -m bench.claim_query", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ledger", nargs="+", choices=(SQLITE, POSTGRESQL), default=[SQLITE, POSTGRESQL])
    parser.add_argument("--confirmed", nargs="+", type=int, default=[10000, 100000], help="confirmed instances (default 10000 100000)")
    parser.add_argument("--waiting", type=int, default=5000, help="received instances after them, the backlog (default 5000)")
    parser.add_argument("--batch", type=int, default=32, help="instances a claim takes (forward.batch_size, default 32)")
    parser.add_argument("--rounds", type=int, default=50, help="claims timed (default 50)")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(f"one claim of {args.batch} from a backlog of {args.waiting} received instances after N confirmed ones (median of {args.rounds})")
    for ledger in args.ledger:
        for confirmed in args.confirmed:
            ms = measure(ledger, confirmed, args.waiting, args.batch, args.rounds)
            print(f"  {ledger:10s} N = {confirmed:>8,}: {ms:7.2f} ms a claim")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
