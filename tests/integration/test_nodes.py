"""Several nodes on one ledger: leases that fence every change, node-local claims, one audit chain, the per-study lock.

Most tests open two ledgers (two engines, two connection pools, two node identities) on one
real PostgreSQL database, as two guard nodes do, and race them; the clocks are moved by hand
so that a lease expires without waiting for it. The tests of how often a holder renews its
lease run on real SQLite and real PostgreSQL (``ledger_engine``) and count the statements the
engine really sends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import Engine, event, func, select, text, update

from guard.domain.errors import LeaseLostError
from guard.domain.states import AuditEvent, InstanceState
from guard.ledger.audit_verify import verify_chain
from guard.ledger.confirmations import Reference, open_outbound
from guard.ledger.db import migrate, open_engine
from guard.ledger.instances import ReceivedInstance, claim_pending, mark_forwarded, record_received
from guard.ledger.leases import FencedLedger, TaskLease
from guard.ledger.ledger import Ledger
from guard.ledger.nodes import NodeInfo, SingleNodeError, list_nodes, register_node
from guard.ledger.schema import audit_log, commitment_transactions, instances, task_leases
from guard.ledger.verification import remove_spool_copy
from tests.integration.test_ledger import Clock, _item
from tests.support.waiting import wait_until

LEASE = timedelta(seconds=30)
REFS = [Reference(None, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.1")]
BEAT = timedelta(seconds=5)


@pytest.fixture
def pg_engines(postgres_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines (two nodes' connection pools) on one freshly migrated PostgreSQL ledger."""
    first = open_engine(postgres_url)
    with first.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    migrate(first)
    second = open_engine(postgres_url)
    yield first, second
    first.dispose()
    second.dispose()


def _receive(ledger: Ledger, *items: ReceivedInstance) -> None:
    with ledger.transaction() as tx:
        for item in items:
            record_received(tx, item)


def _two_holders(engines: tuple[Engine, Engine], task: str) -> tuple[Clock, Clock, Ledger, Ledger, TaskLease, TaskLease]:
    """Two nodes (each its own clock and pool) and each one's holder of the lease of ``task``."""
    clock_a, clock_b = Clock(), Clock()
    base_a = Ledger(engines[0], clock_a, node="node-a")
    base_b = Ledger(engines[1], clock_b, node="node-b")
    return clock_a, clock_b, base_a, base_b, TaskLease(base_a, task, "a:1", LEASE), TaskLease(base_b, task, "b:1", LEASE)


def _audit_nodes(ledger: Ledger, event: AuditEvent) -> list[str | None]:
    with ledger.read() as conn:
        return list(conn.execute(select(audit_log.c.node).where(audit_log.c.event == event.value).order_by(audit_log.c.seq)).scalars())


def test_a_node_whose_forwarding_lease_was_taken_over_cannot_mark_the_instance_forwarded(pg_engines: tuple[Engine, Engine]) -> None:
    """Node A's lease expires, node B claims and forwards the instance; A's late outcome changes nothing and is not audited."""
    clock_a, clock_b = Clock(), Clock()
    node_a = Ledger(pg_engines[0], clock_a, node="node-a")
    node_b = Ledger(pg_engines[1], clock_b, node="node-b")
    _receive(node_a, _item(1))
    (claim_a,) = claim_pending(node_a, "a:1", 10, LEASE)
    assert claim_pending(node_b, "b:1", 10, LEASE) == []  # held: B may not take it yet
    clock_b.now += LEASE + timedelta(seconds=1)
    (claim_b,) = claim_pending(node_b, "b:1", 10, LEASE)
    clock_a.now = clock_b.now  # A comes back from its long send, at the same wall time
    with node_a.transaction() as tx:
        assert mark_forwarded(tx, claim_a, "a:1", status=0, archive_ae="ARCHIVE") is False
    with node_b.transaction() as tx:
        assert mark_forwarded(tx, claim_b, "b:1", status=0, archive_ae="ARCHIVE") is True
    assert _audit_nodes(node_a, AuditEvent.INSTANCE_FORWARDED) == ["node-b"]


def test_a_node_whose_forwarding_lease_expired_cannot_mark_the_instance_forwarded_even_unclaimed(
    pg_engines: tuple[Engine, Engine],
) -> None:
    """An expired lease is lost even when nobody has claimed the instance since: the outcome is refused and it is sent again."""
    clock = Clock()
    node_a = Ledger(pg_engines[0], clock, node="node-a")
    _receive(node_a, _item(1))
    (claim,) = claim_pending(node_a, "a:1", 10, LEASE)
    clock.now += LEASE + timedelta(seconds=1)
    with node_a.transaction() as tx:
        assert mark_forwarded(tx, claim, "a:1", status=0, archive_ae="ARCHIVE") is False
    with node_a.read() as conn:
        assert InstanceState.RECEIVED.value == conn.execute(select(instances.c.state)).scalar_one()
    assert _audit_nodes(node_a, AuditEvent.INSTANCE_FORWARDED) == []


def test_a_node_that_lost_the_confirm_lease_can_open_no_commitment_request(pg_engines: tuple[Engine, Engine]) -> None:
    """A holds the confirm lease; after it expires B takes it (epoch 2); every fenced change of A raises and is rolled back."""
    clock_a, clock_b, base_a, base_b, lease_a, lease_b = _two_holders(pg_engines, "confirm")
    assert (lease_a.hold(), lease_b.hold()) == (True, False)
    clock_b.now += LEASE + timedelta(seconds=1)
    assert lease_b.hold() is True
    assert lease_b.held is not None
    assert lease_b.held.epoch == 2
    clock_a.now = clock_b.now
    with pytest.raises(LeaseLostError):
        open_outbound(
            FencedLedger(base_a, lease_a), transaction_uid="1.2.9.1", archive_ae="ARCHIVE", study_uid="1.2.3", refs=REFS, timeout=60
        )
    open_outbound(FencedLedger(base_b, lease_b), transaction_uid="1.2.9.2", archive_ae="ARCHIVE", study_uid="1.2.3", refs=REFS, timeout=60)
    with base_a.read() as conn:
        assert list(conn.execute(select(commitment_transactions.c.transaction_uid)).scalars()) == ["1.2.9.2"]
    assert _audit_nodes(base_a, AuditEvent.LEASE_ACQUIRED) == ["node-a", "node-b"]


def test_a_node_that_lost_the_spool_lease_removes_no_spool_copy(pg_engines: tuple[Engine, Engine]) -> None:
    """The file is removed inside the fenced transaction: after a takeover, A's removal is never called and nothing is recorded."""
    clock_a, clock_b, base_a, base_b, lease_a, lease_b = _two_holders(pg_engines, "spool-clean")
    _receive(base_a, _item(1))
    with base_a.transaction() as tx:
        tx.conn.execute(update(instances).values(state=InstanceState.CONFIRMED.value, confirmed_at=clock_a.now))
    with base_a.read() as conn:
        instance_id = conn.execute(select(instances.c.id)).scalar_one()
    assert lease_a.hold() is True
    clock_b.now += LEASE + timedelta(seconds=1)
    assert lease_b.hold() is True
    clock_a.now = clock_b.now
    removed: list[str] = []
    with pytest.raises(LeaseLostError):
        remove_spool_copy(FencedLedger(base_a, lease_a), instance_id, lambda: removed.append("a"))
    with base_a.read() as conn:
        assert conn.execute(select(instances.c.spool_removed_at)).scalar_one() is None
    assert remove_spool_copy(FencedLedger(base_b, lease_b), instance_id, lambda: removed.append("b")) is True
    assert removed == ["b"]


def test_a_takeover_waits_for_a_fenced_change_in_progress(pg_engines: tuple[Engine, Engine]) -> None:
    """B's takeover blocks on the lease row while A's fenced change is open, then sees the lease A's change renewed: no interleaving."""
    clock_a, clock_b, base_a, _base_b, lease_a, lease_b = _two_holders(pg_engines, "confirm")
    assert lease_a.hold() is True  # until t0 + 30 s
    outcome: list[bool] = []
    clock_a.now += timedelta(seconds=20)
    with FencedLedger(base_a, lease_a).transaction():  # renews to t0 + 50 s, committed when the block ends
        # At B's time the lease as last committed (t0 + 30 s) is over: B would take it, were it not for the row lock.
        clock_b.now += LEASE + timedelta(seconds=1)
        taker = threading.Thread(target=lambda: outcome.append(lease_b.hold()))
        taker.start()
        wait_until(lambda: _waiting_on_a_row_lock(base_a), timeout=30, message="B waiting on the lease row")
    taker.join(30)
    assert outcome == [False]


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement ``engine`` sends to the database while the block runs (BEGIN, COMMIT and ROLLBACK included)."""
    sent: list[str] = []

    def on_execute(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement)

    def on_end(_conn: object) -> None:
        sent.append("COMMIT/ROLLBACK")

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_end)
    event.listen(engine, "rollback", on_end)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_end)
        event.remove(engine, "rollback", on_end)


def _expires_at(ledger: Ledger, task: str) -> object:
    with ledger.read() as conn:
        return conn.execute(select(task_leases.c.expires_at).where(task_leases.c.name == task)).scalar_one()


def test_a_holder_renews_its_lease_only_when_half_of_it_has_passed(ledger_engine: Engine) -> None:
    """A lease taken a moment ago is held from memory (no statement at all); past half its duration it is renewed in the ledger."""
    clock = Clock()
    base = Ledger(ledger_engine, clock, node="node-a")
    lease = TaskLease(base, "confirm", "a:1", LEASE)
    assert lease.hold() is True
    taken = _expires_at(base, "confirm")
    for _ in range(3):
        clock.now += timedelta(seconds=4)
        with _statements(ledger_engine) as sent:
            assert lease.hold() is True
        assert sent == []
    assert _expires_at(base, "confirm") == taken
    clock.now += timedelta(seconds=4)  # 16 s after the take: past half of 30 s
    with _statements(ledger_engine) as sent:
        assert lease.hold() is True
    assert any(statement.lstrip().upper().startswith("UPDATE") for statement in sent)
    assert _expires_at(base, "confirm") != taken
    assert _audit_nodes(base, AuditEvent.LEASE_ACQUIRED) == ["node-a"]  # renewed, not taken again


def test_a_holder_renews_when_half_the_lease_passed_by_the_monotonic_clock(ledger_engine: Engine) -> None:
    """The ledger's clock standing still does not keep a lease fresh: half of it by ``time.monotonic()`` renews it too."""
    base = Ledger(ledger_engine, Clock(), node="node-a")
    lease = TaskLease(base, "confirm", "a:1", timedelta(seconds=0.4))
    assert lease.hold() is True
    wait_until(lease.due_for_renewal, timeout=10, message="the lease never came due by the monotonic clock")
    with _statements(ledger_engine) as sent:
        assert lease.hold() is True
    assert any(statement.lstrip().upper().startswith("UPDATE") for statement in sent)
    with _statements(ledger_engine) as sent:
        assert lease.hold() is True
    assert sent == []


def _fail() -> None:
    msg = "the change fails"
    raise RuntimeError(msg)


def test_a_committed_fenced_change_counts_as_a_renewal(ledger_engine: Engine) -> None:
    """After a fenced transaction renewed the lease, ``hold()`` answers from memory; one rolled back does not count."""
    clock = Clock()
    base = Ledger(ledger_engine, clock, node="node-a")
    lease = TaskLease(base, "confirm", "a:1", LEASE)
    assert lease.hold() is True
    clock.now += timedelta(seconds=20)
    assert lease.due_for_renewal() is True
    with pytest.raises(RuntimeError), FencedLedger(base, lease).transaction():
        _fail()
    assert lease.due_for_renewal() is True  # that renewal was rolled back with the change
    with FencedLedger(base, lease).transaction():
        pass
    with _statements(ledger_engine) as sent:
        assert lease.hold() is True
    assert sent == []


def test_a_holder_answering_from_memory_after_a_takeover_still_changes_nothing(ledger_engine: Engine) -> None:
    """A's lease is taken over by B (A's clock says A renewed a moment ago): A's ``hold()`` may say True, its fence raises.

    Nothing A tried is in the ledger, and A's next ``hold()`` asks the ledger and learns it lost the task.
    """
    clock_a, clock_b = Clock(), Clock()
    base_a = Ledger(ledger_engine, clock_a, node="node-a")
    base_b = Ledger(ledger_engine, clock_b, node="node-b")
    lease_a, lease_b = TaskLease(base_a, "confirm", "a:1", LEASE), TaskLease(base_b, "confirm", "b:1", LEASE)
    assert lease_a.hold() is True
    with _statements(ledger_engine) as sent:
        assert lease_b.hold() is False  # another holder's lease runs: a read, no write transaction
    assert not any(statement.lstrip().upper().startswith(("UPDATE", "INSERT", "BEGIN IMMEDIATE")) for statement in sent)
    clock_b.now += LEASE + timedelta(seconds=1)
    assert lease_b.hold() is True
    assert lease_a.hold() is True  # from memory: A's own clocks say it renewed a moment ago
    with pytest.raises(LeaseLostError):
        open_outbound(
            FencedLedger(base_a, lease_a), transaction_uid="1.2.9.1", archive_ae="ARCHIVE", study_uid="1.2.3", refs=REFS, timeout=60
        )
    with base_a.read() as conn:
        assert list(conn.execute(select(commitment_transactions.c.transaction_uid)).scalars()) == []
    assert lease_a.hold() is False
    open_outbound(FencedLedger(base_b, lease_b), transaction_uid="1.2.9.2", archive_ae="ARCHIVE", study_uid="1.2.3", refs=REFS, timeout=60)
    with base_a.read() as conn:
        assert list(conn.execute(select(commitment_transactions.c.transaction_uid)).scalars()) == ["1.2.9.2"]


def _waiting_on_a_row_lock(ledger: Ledger) -> bool:
    with ledger.read() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one())


def test_node_local_forwarding_claims_only_what_the_node_received(pg_engines: tuple[Engine, Engine]) -> None:
    """With a node-local spool, node A never claims node B's instances (B's wait for B); a shared spool lets A take all."""
    clock = Clock()
    node_a = Ledger(pg_engines[0], clock, node="node-a")
    node_b = Ledger(pg_engines[1], clock, node="node-b")
    _receive(node_a, _item(1))
    _receive(node_b, _item(2), _item(3))
    mine = claim_pending(node_a, "a:1", 10, LEASE, held_by="node-a")
    assert [c.sop_instance_uid for c in mine] == ["1.2.3.4.1"]
    queues = {n.node: n.queue for n in list_nodes(node_a, BEAT)}
    assert queues == {}  # nobody registered yet: the queue is per registered node
    for ledger in (node_a, node_b):
        register_node(ledger, NodeInfo(node=str(ledger.node), ae_title="GUARD", version="t", pid=1), BEAT)
    assert {n.node: n.queue for n in list_nodes(node_a, BEAT)} == {"node-a": 1, "node-b": 2}
    shared = claim_pending(node_a, "a:2", 10, LEASE)
    assert [c.sop_instance_uid for c in shared] == ["1.2.3.4.2", "1.2.3.4.3"]


def test_one_audit_chain_over_records_written_by_two_nodes_at_once(pg_engines: tuple[Engine, Engine]) -> None:
    """Two nodes audit concurrently: one gap-free chain that verifies, each record naming its node; a changed node breaks it."""
    nodes = [Ledger(engine, node=f"node-{i}") for i, engine in enumerate(pg_engines)]

    def write(ledger: Ledger) -> None:
        for n in range(40):
            ledger.audit(AuditEvent.CONFIG_LOADED, detail={"n": n})

    threads = [threading.Thread(target=write, args=(ledger,)) for ledger in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    report = verify_chain(nodes[0])
    assert (report.ok, report.checked) == (True, 80)
    with nodes[0].read() as conn:
        assert dict(conn.execute(select(audit_log.c.node, func.count()).group_by(audit_log.c.node)).all()) == {"node-0": 40, "node-1": 40}
    with nodes[0].transaction() as tx:
        tx.conn.execute(update(audit_log).where(audit_log.c.seq == 7).values(node="node-9"))
    broken = verify_chain(nodes[1]).broken
    assert broken is not None
    assert (broken.seq, broken.kind) == (7, "altered")


def test_the_study_lock_serialises_two_nodes(pg_engines: tuple[Engine, Engine]) -> None:
    """While node A holds the lock of a study, node B's request for the same study waits; another study does not."""
    node_a, node_b = (Ledger(engine, node=f"node-{i}") for i, engine in enumerate(pg_engines))
    order: list[str] = []
    with node_a.study_lock("1.2.3"):
        with node_b.study_lock("1.2.4"):
            order.append("b other study")
        second = threading.Thread(target=lambda: _locked_append(node_b, "1.2.3", order, "b"))
        second.start()
        wait_until(lambda: _waiting_on_a_row_lock(node_a), timeout=30, message="B waiting on the study lock")
        order.append("a")
    second.join(30)
    assert order == ["b other study", "a", "b"]


def _locked_append(ledger: Ledger, study: str, order: list[str], name: str) -> None:
    with ledger.study_lock(study):
        order.append(name)


def test_an_sqlite_ledger_refuses_a_second_live_node(ledger: Ledger) -> None:
    """SQLite serves one node: a second node identity is refused while the first is alive; PostgreSQL takes both."""
    first = Ledger(ledger.engine, node="node-a")
    second = Ledger(ledger.engine, node="node-b")
    register_node(first, NodeInfo(node="node-a", ae_title="GUARD", version="t", pid=1), BEAT)
    register_node(first, NodeInfo(node="node-a", ae_title="GUARD", version="t", pid=2), BEAT)  # the same node restarting
    if ledger.engine.dialect.name == "sqlite":
        with pytest.raises(SingleNodeError, match="serves one node"):
            register_node(second, NodeInfo(node="node-b", ae_title="GUARD", version="t", pid=3), BEAT)
    else:
        register_node(second, NodeInfo(node="node-b", ae_title="GUARD", version="t", pid=3), BEAT)
        assert [n.node for n in list_nodes(ledger, BEAT)] == ["node-a", "node-b"]
