"""Cluster-wide task leases: one node at a time runs a task, and a node that lost it changes nothing.

Several guard nodes share one ledger. The tasks that must run once per cluster (confirmation
towards the archive, Storage Commitment reports to sources, the ATNA outbox, audit retention;
the spool clean-up once per shared spool, or once per node-local spool) each have a row in
``task_leases``: the holder (``owner``, unique per process), its node, an ``epoch`` that grows
at every change of holder, and when the lease expires.

- ``TaskLease.hold()`` at the start of each round says whether this holder may run the round.
  It takes the lease if it is free or expired (``SELECT ... FOR UPDATE`` on the row: PostgreSQL
  serialises the candidates; SQLite's ``BEGIN IMMEDIATE`` does the same), or renews it if this
  holder still has it; while another holder's lease runs, a read answers, without a write
  transaction. A lease this holder took or renewed less than half its duration ago is not
  renewed again: ``hold()`` answers from memory, without a statement. A loop that runs a round a
  second would otherwise commit (and on SQLite fsync, holding the one writer lock that receiving
  waits for) a write transaction per round and task for nothing.
- ``TaskLease.check(tx)`` is the fence, run first in every transaction that changes state for
  the task (``FencedLedger``): it renews the lease only if holder and epoch are unchanged and it
  has not expired, and otherwise raises ``LeaseLostError``, which rolls the transaction back. The
  UPDATE locks the lease row until commit, so a takeover waits for a fenced change in progress
  and can never interleave with it. A committed fenced transaction counts as a renewal.

Why answering from memory is safe: ``hold()`` only decides whether a round is worth running; it
changes nothing. Every state change of a task still goes through ``check(tx)``, which verifies
owner, epoch and expiry in the database inside the same transaction, so a holder that lost its
lease (taken over by another node, or expired while this one could not reach the ledger) changes
nothing, whatever ``hold()`` answered: its first change raises ``LeaseLostError`` and is rolled
back, and its next ``hold()`` asks the ledger. Nor does a takeover happen while a holder still
answers from memory, except when the clocks disagree: another node takes the lease only once it
has expired, and expiry is at least the full duration after the last renewal, while the memory
answer stops at half of it. The half is measured twice, by ``time.monotonic()`` (a wall clock
stepped back does not extend it) and by the ledger's clock, the one expiry is written in (a wall
clock stepped forward brings the renewal forward): whichever says the lease is due renews it.
What a holder does outside the ledger before its first fenced change (a C-FIND, or a report to a
source, ADR 0015) it may do in the same window before and after this change: lost leases are no
more frequent than before, and are found at the same fence.

When the ledger cannot be reached, a lease that is due for renewal is dropped (``hold()`` is
False until the ledger answers again), and a lease renewed a moment ago lets the round run: its
reads fail and the loop's boundary reports the error, as any round would with the ledger down.

Time is each node's own clock: nodes must keep their clocks in step (NTP), well within the lease.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from guard.domain.errors import LeaseLostError, LedgerError
from guard.domain.states import AuditEvent
from guard.ledger.audit import Transaction
from guard.ledger.instances import as_utc
from guard.ledger.ledger import Ledger
from guard.ledger.schema import task_leases


def new_owner(node: str | None) -> str:
    """A holder name unique to this process and call: the node, the process id and a random part."""
    return f"{node or '-'}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Held:
    """A lease as held: by whom, at which epoch."""

    name: str
    owner: str
    epoch: int


@dataclass(frozen=True)
class Renewal:
    """A take or renewal of ``held``, timed before its statement by the monotonic clock and by the ledger's."""

    held: Held
    monotonic: float
    at: datetime


class TaskLease:
    """The lease of one task for one holder (``owner``), taken and renewed for ``duration``.

    One loop uses a lease (``hold`` and its ``FencedLedger``); ``release`` may come from another
    thread when the service stops.
    """

    def __init__(self, ledger: Ledger, name: str, owner: str, duration: timedelta) -> None:
        """Lease ``name`` on ``ledger`` as ``owner``."""
        self.ledger = ledger
        self.name = name
        self.owner = owner
        self.duration = duration
        self.held: Held | None = None
        self.renewal: Renewal | None = None

    def hold(self) -> bool:
        """Whether this holder has the lease now: from memory while it is fresh, else taken or renewed in the ledger.

        False also when the ledger cannot be reached while the lease is due for renewal.
        """
        if self.held is not None and not self.due_for_renewal():
            return True
        try:
            self.held = self._take()
        except LedgerError:
            self.held = None
        if self.held is None:
            self.renewal = None
        return self.held is not None

    def due_for_renewal(self) -> bool:
        """Whether half the lease or more has passed since this holder last took or renewed it (by either clock)."""
        renewal = self.renewal
        if renewal is None or renewal.held != self.held:
            return True
        half = self.duration / 2
        return time.monotonic() - renewal.monotonic >= half.total_seconds() or self.ledger.clock() - renewal.at >= half

    def _held_by_another(self) -> bool:
        """Whether another holder's lease runs now: a read, so that a node that is not the holder takes no write lock each round."""
        now = self.ledger.clock()
        with self.ledger.read() as conn:
            row = conn.execute(select(task_leases.c.owner, task_leases.c.expires_at).where(task_leases.c.name == self.name)).one_or_none()
        if row is None or row.owner is None or row.owner == self.owner:
            return False
        expires = as_utc(row.expires_at)
        return expires is not None and expires > now

    def _take(self) -> Held | None:
        if self.held is None and self._held_by_another():
            return None
        started = time.monotonic()
        with self.ledger.transaction() as tx:
            now = tx.clock()
            insert = postgresql.insert if tx.conn.dialect.name == "postgresql" else sqlite.insert
            tx.conn.execute(
                insert(task_leases).values(name=self.name, owner=None, node=None, epoch=0, expires_at=now).on_conflict_do_nothing()
            )
            row = tx.conn.execute(select(task_leases).where(task_leases.c.name == self.name).with_for_update()).one()
            expires = as_utc(row.expires_at)
            mine = row.owner == self.owner and expires is not None and expires > now
            if not mine and row.owner is not None and expires is not None and expires > now:
                return None
            epoch = int(row.epoch) if mine else int(row.epoch) + 1
            tx.conn.execute(
                update(task_leases)
                .where(task_leases.c.name == self.name)
                .values(owner=self.owner, node=tx.node, epoch=epoch, expires_at=now + self.duration),
            )
            if not mine:
                tx.audit(
                    AuditEvent.LEASE_ACQUIRED,
                    actor=self.owner,
                    detail={"task": self.name, "epoch": epoch, "previous_node": row.node, "previous_owner": row.owner},
                )
        held = Held(self.name, self.owner, epoch)
        self.renewal = Renewal(held, started, now)
        return held

    def check(self, tx: Transaction) -> Renewal:
        """The fence: renew the lease inside ``tx`` if still held at the same epoch, else raise ``LeaseLostError``.

        The renewal counts (``renewed``) only once ``tx`` has committed: ``FencedLedger`` says so.
        """
        held = self.held
        started = time.monotonic()
        now = tx.clock()
        if held is not None:
            result = tx.conn.execute(
                update(task_leases)
                .where(
                    task_leases.c.name == held.name,
                    task_leases.c.owner == held.owner,
                    task_leases.c.epoch == held.epoch,
                    task_leases.c.expires_at > now,
                )
                .values(expires_at=now + self.duration),
            )
            if result.rowcount:
                return Renewal(held, started, now)
        self.held = None
        self.renewal = None
        msg = f"lease of {self.name!r} lost by {self.owner}: another node holds it, or it expired"
        raise LeaseLostError(msg)

    def renewed(self, renewal: Renewal) -> None:
        """A fenced transaction that renewed the lease committed: the next renewal is due half a lease later."""
        current = self.renewal
        if renewal.held == self.held and (current is None or renewal.monotonic > current.monotonic):
            self.renewal = renewal

    def release(self) -> None:
        """Give the lease up (on stop) so that another node takes the task at once; never raises a ledger error."""
        held, self.held = self.held, None
        self.renewal = None
        if held is None:
            return
        try:
            with self.ledger.transaction() as tx:
                tx.conn.execute(
                    update(task_leases)
                    .where(task_leases.c.name == held.name, task_leases.c.owner == held.owner, task_leases.c.epoch == held.epoch)
                    .values(owner=None, expires_at=tx.clock()),
                )
        except LedgerError:
            return


class FencedLedger(Ledger):
    """The ledger as seen by one task: every transaction first checks (and renews) the task's lease."""

    def __init__(self, base: Ledger, lease: TaskLease) -> None:
        """Share ``base``'s engine, clock and node; fence with ``lease``."""
        super().__init__(base.engine, base.clock, node=base.node)
        self.lease = lease

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A transaction that changes nothing unless the lease is still held (``LeaseLostError`` otherwise)."""
        with super().transaction() as tx:
            renewal = self.lease.check(tx)
            yield tx
        self.lease.renewed(renewal)


def lease_holders(ledger: Ledger) -> dict[str, str | None]:
    """Task name -> node holding its lease now (None: free or expired)."""
    now = ledger.clock()
    with ledger.read() as conn:
        rows = conn.execute(select(task_leases)).all()
    return {r.name: r.node if r.owner is not None and (as_utc(r.expires_at) or now) > now else None for r in rows}
