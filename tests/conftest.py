"""Fixtures shared by the whole suite: databases for the ledger, and the rule on skipping.

Under ``CI=true`` a test that needs a real peer or PostgreSQL fails when it is missing; it
never skips. On a developer's machine it skips with the reason, so ``make test`` (which
installs the peers first) is the way to run everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import _config as pynetdicom_config
from pynetdicom import dimse_messages
from sqlalchemy import Engine, text

from guard import runtime
from guard.ledger.db import migrate, open_engine
from guard.ledger.ledger import Ledger
from guard.ledger.schema import metadata
from guard.runtime import commands, file_meta, negotiation, reactor, uid_checks
from tests.support import catalogue, workers
from tests.support.postgres import scratch_database

pytest_plugins = ["tests.support.fixtures"]

# The guard's processes run pynetdicom with event-driven association threads
# (``guard.runtime.reactor``, installed by ``configure_dicom``), negotiate against prepared
# contexts (``guard.runtime.negotiation``) and check a valid UID once (``guard.runtime.uid_checks``);
# the associations opened in the test process itself (in-process guards and the tests' own
# pynetdicom peers) do too, from the start, whichever test a worker happens to run first.
reactor.install()
negotiation.install()
uid_checks.install()
commands.install()
file_meta.install()

TESTS_DIR = Path(__file__).parent.resolve()
HOSTILE_DIR = TESTS_DIR / "hostile"
HOSTILE_GROUP = "hostile"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped afterwards."""
    with scratch_database("guard_test") as (url, _admin):
        yield url


#: pynetdicom's module settings that an in-process guard changes (guard.runtime.configure_dicom).
_PYNETDICOM_SETTINGS = (
    "STORE_RECV_CHUNKED_DATASET",
    "STORE_SEND_CHUNKED_DATASET",
    "ENFORCE_UID_CONFORMANCE",
    "LOG_HANDLER_LEVEL",
    "LOG_REQUEST_IDENTIFIERS",
    "LOG_RESPONSE_IDENTIFIERS",
)


@pytest.fixture(autouse=True)
def _process_wide_dicom_state() -> Iterator[None]:
    """Put pynetdicom's settings and the guard's receiving folder back as they were after each test.

    An in-process guard (``GuardService``) sets them for the whole process. Without this, the
    next test in the same worker (which test that is depends on how pytest-xdist distributes
    them) would receive into that guard's spool, perhaps already unmounted or read-only.
    """
    saved = {name: getattr(pynetdicom_config, name) for name in _PYNETDICOM_SETTINGS}
    temporary_file = dimse_messages.NamedTemporaryFile  # type: ignore[attr-defined]
    incoming, max_size = runtime._incoming_dir, runtime._max_dataset_size
    yield
    for name, value in saved.items():
        setattr(pynetdicom_config, name, value)
    dimse_messages.NamedTemporaryFile = temporary_file  # type: ignore[attr-defined]
    runtime._incoming_dir, runtime._max_dataset_size = incoming, max_size


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

#: What the pytest-xdist controller learns during the run, for its catalogue check.
_RUN: dict[str, bool] = {"catalogue_test_ran": False, "worker_lost": False}
#: How many hostile-input cases each worker ran and found contained.
_HOSTILE_CASES: list[int] = []


def _whole_suite_requested(config: pytest.Config) -> bool:
    """Whether the command line asks for every test: no path but ``tests``, no ``-k``, ``-m``, ``--deselect`` or ``--lf``."""
    option = config.option
    narrowed = bool(option.keyword or option.markexpr or option.deselect or getattr(option, "lf", False))
    return not narrowed and [Path(a).resolve() for a in config.args] in ([], [TESTS_DIR])


def pytest_configure(config: pytest.Config) -> None:
    """Watch the audit records written in this process (for the catalogue check)."""
    del config
    catalogue.watch_in_process_ledgers()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the catalogue check last, and tell it whether the whole suite is running in this process.

    A pytest-xdist worker runs only a share of the suite: its catalogue test checks what it saw,
    and the controller checks the union of all workers (``pytest_sessionfinish`` below). The
    hostile-input cases share one guard (a package fixture): under ``--dist loadgroup`` they stay
    on one worker, so that guard starts once; every other test goes to whichever worker is free.
    """
    last = [item for item in items if item.name == LAST]
    items[:] = [item for item in items if item.name != LAST] + last
    config.stash[catalogue.WHOLE_SUITE] = not workers.is_worker(config) and _whole_suite_requested(config)
    for item in items:
        if HOSTILE_DIR in item.path.parents:
            item.add_marker(pytest.mark.xdist_group(HOSTILE_GROUP))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """In the controller, note that a worker ran the catalogue test (the union is checked only then)."""
    if report.when == "call" and report.nodeid.endswith(f"::{LAST}"):
        _RUN["catalogue_test_ran"] = True


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Gather the audit events a pytest-xdist worker saw (it sends them when it finishes)."""
    output = getattr(node, "workeroutput", None)
    if error is not None or output is None or catalogue.WORKER_OUTPUT not in output:
        _RUN["worker_lost"] = True
        return
    catalogue.SEEN.update(output[catalogue.WORKER_OUTPUT])
    _HOSTILE_CASES.append(output.get(workers.HOSTILE_CASES, 0))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A worker hands its events to the controller; the controller checks the catalogue against all of them.

    The controller's check is the catalogue test's, over the whole run: emitted ⊆ documented
    always, documented ⊆ emitted when the whole suite ran. It runs only when the catalogue test
    ran and every worker finished its share (a run stopped early or a lost worker has already
    failed). A disagreement is reported as a failed test and fails the run.
    """
    config = session.config
    if workers.is_worker(config):
        config.workeroutput[catalogue.WORKER_OUTPUT] = sorted(catalogue.SEEN)  # type: ignore[attr-defined]
        return
    complete = exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) and not (session.shouldstop or session.shouldfail)
    if not (workers.is_controller(config) and _RUN["catalogue_test_ran"] and complete and not _RUN["worker_lost"]):
        return
    whole_suite = _whole_suite_requested(config)
    problems = catalogue.disagreements(catalogue.SEEN, whole_suite=whole_suite)
    if not problems:
        if whole_suite:
            catalogue.CHECKED_BOTH_WAYS.append(len(catalogue.documented_events()))
        return
    report = pytest.TestReport(
        nodeid=f"tests/test_audit_catalogue.py::{LAST}[all workers]",
        location=("tests/test_audit_catalogue.py", None, f"{LAST}[all workers]"),
        keywords={},
        outcome="failed",
        longrepr="audit events of all workers:\n" + "\n".join(problems),
        when="call",
    )
    config.hook.pytest_runtest_logreport(report=report)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say whether the audit catalogue was checked both ways (only when the whole suite ran), and how many hostile cases ran."""
    if catalogue.CHECKED_BOTH_WAYS:
        terminalreporter.write_line(f"audit catalogue: all {catalogue.CHECKED_BOTH_WAYS[0]} documented events produced by the suite")
    if sum(_HOSTILE_CASES):  # in the pytest-xdist controller; a serial run prints it from tests/hostile/conftest.py
        terminalreporter.write_line(workers.hostile_summary(sum(_HOSTILE_CASES)))
