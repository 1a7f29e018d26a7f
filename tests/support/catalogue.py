"""Which audit events the test run produced, for the check that the catalogue and the code agree.

Two sources: every ledger transaction in the test process (integration tests), and the ledger
of every ``guard`` process a test ran (read when the test stops it).

Under pytest-xdist each worker sees only the tests it ran: a worker hands its events to the
controller when it finishes (``workeroutput``), and the controller checks their union once all
workers are done (tests/conftest.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.exc import SQLAlchemyError

from guard.ledger import audit as audit_module
from guard.ledger.schema import audit_log

#: Event names seen in this test run.
SEEN: set[str] = set()

#: Set when the whole-suite check ran: how many events it found documented and produced.
CHECKED_BOTH_WAYS: list[int] = []

#: Whether this run collected the whole suite (set by tests/conftest.py).
WHOLE_SUITE = pytest.StashKey[bool]()

#: Key of a worker's events in pytest-xdist's ``workeroutput``.
WORKER_OUTPUT = "audit_events"

CATALOGUE = Path(__file__).parents[2] / "docs" / "audit-events.md"


def documented_events() -> set[str]:
    """The event names that docs/audit-events.md has a section for."""
    return set(re.findall(r"^### `([a-z_]+\.[a-z_]+)`", CATALOGUE.read_text(encoding="utf-8"), flags=re.MULTILINE))


def disagreements(seen: set[str], *, whole_suite: bool) -> list[str]:
    """What is wrong between the catalogue and the events ``seen``: one sentence per problem, none when they agree."""
    documented = documented_events()
    problems = []
    if seen - documented:
        problems.append(f"emitted but not in docs/audit-events.md: {sorted(seen - documented)}")
    if whole_suite and documented - seen:
        problems.append(f"in the catalogue but no test produced it: {sorted(documented - seen)}")
    return problems


def watch_in_process_ledgers() -> None:
    """Record the events of every audit record written in this process."""
    original = audit_module.Transaction.flush_audit

    def flush_audit(self: audit_module.Transaction) -> None:
        SEEN.update(record.event.value for record in self.pending)
        original(self)

    audit_module.Transaction.flush_audit = flush_audit  # type: ignore[method-assign]


def collect_from_ledger(url: str, **engine_args: Any) -> None:
    """Add the events stored in the ledger at ``url`` (nothing when it does not exist or cannot be read)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return
    engine = create_engine(url, **engine_args)
    try:
        with engine.connect() as conn:
            SEEN.update(conn.execute(select(audit_log.c.event).distinct()).scalars())
    except SQLAlchemyError:
        return
    finally:
        engine.dispose()
