"""The ledger's one seam for database errors: transient and permanent failures are types, for reads and writes alike."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from guard.domain.errors import LedgerRejectedError, LedgerUnavailableError
from guard.ledger.db import migrate, open_engine
from guard.ledger.ledger import Ledger
from guard.ledger.schema import audit_exports, studies
from tests.support.pg_cluster import private_cluster


def test_a_refused_statement_is_a_permanent_ledger_error(ledger: Ledger) -> None:
    """A constraint violation inside a transaction is LedgerRejectedError (retrying will not help), its cause the driver's error."""
    now = ledger.clock()
    row = {"name": "x", "last_seq": 1, "updated_at": now}
    with ledger.transaction() as tx:
        tx.conn.execute(insert(audit_exports).values(row))
    with pytest.raises(LedgerRejectedError) as caught, ledger.transaction() as tx:
        tx.conn.execute(insert(audit_exports).values(row))
    assert caught.value.__cause__ is not None


def test_reads_and_writes_on_a_stopped_database_are_transient_ledger_errors() -> None:
    """Database stopped: read(), transaction() and migrate() raise LedgerUnavailableError; reachable() is False; back when it is."""
    with private_cluster() as cluster:
        engine = open_engine(cluster.url)
        migrate(engine)
        ledger = Ledger(engine)
        assert ledger.reachable()
        cluster.stop()
        with pytest.raises(LedgerUnavailableError), ledger.read() as conn:
            conn.execute(select(studies))
        with pytest.raises(LedgerUnavailableError), ledger.transaction() as tx:
            tx.conn.execute(select(studies))
        with pytest.raises(LedgerUnavailableError):
            migrate(open_engine(cluster.url))
        assert not ledger.reachable()
        cluster.start()
        with ledger.read() as conn:
            assert conn.execute(select(studies)).all() == []
        ledger.dispose()
