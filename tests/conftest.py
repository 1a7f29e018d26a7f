"""Fixtures shared by the whole suite: databases for the ledger, and the rule on skipping.

Under ``CI=true`` a test that needs a real peer or PostgreSQL fails when it is missing; it
never skips. On a developer's machine it skips with the reason, so ``make test`` (which
installs the peers first) is the way to run everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from guard.ledger.audit import Ledger
from guard.ledger.db import migrate, open_engine
from guard.ledger.schema import metadata
from tests.support import catalogue
from tests.support.postgres import scratch_database

pytest_plugins = ["tests.support.fixtures"]

TESTS_DIR = Path(__file__).parent.resolve()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped afterwards."""
    with scratch_database("guard_test") as (url, _admin):
        yield url


def _reset(engine: Engine) -> None:
    """Drop every table, including Alembic's, so the next migration starts from nothing."""
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An empty, migrated ledger database: SQLite in a temporary folder, or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = open_engine(url)
    _reset(engine)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def ledger(ledger_engine: Engine) -> Ledger:
    """A ``Ledger`` on the migrated database."""
    return Ledger(ledger_engine)


LAST = "test_audit_catalogue_matches_the_events_the_suite_produced"


def pytest_configure(config: pytest.Config) -> None:
    """Watch the audit records written in this process (for the catalogue check)."""
    del config
    catalogue.watch_in_process_ledgers()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the catalogue check last, and tell it whether the whole suite is running."""
    last = [item for item in items if item.name == LAST]
    items[:] = [item for item in items if item.name != LAST] + last
    option = config.option
    narrowed = bool(option.keyword or option.markexpr or option.deselect or getattr(option, "lf", False))
    config.stash[catalogue.WHOLE_SUITE] = not narrowed and [Path(a).resolve() for a in config.args] in ([], [TESTS_DIR])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say whether the audit catalogue was checked both ways (only when the whole suite ran)."""
    if catalogue.CHECKED_BOTH_WAYS:
        terminalreporter.write_line(f"audit catalogue: all {catalogue.CHECKED_BOTH_WAYS[0]} documented events produced by the suite")
