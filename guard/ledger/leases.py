"""Cluster-wide task leases: one node at a time runs a task, and a node that lost it changes nothing.

Several guard nodes share one ledger. The tasks that must run once per cluster (confirmation
towards the archive, Storage Commitment reports to sources, the ATNA outbox, audit retention;
the spool clean-up once per shared spool, or once per node-local spool) each have a row in
``task_leases``: the holder (``owner``, unique per process), its node, an ``epoch`` that grows
at every change of holder, and when the lease expires.

- ``TaskLease.hold()`` at the start of each round takes the lease if it is free or expired
  (``SELECT ... FOR UPDATE`` on the row: PostgreSQL serialises the candidates; SQLite's
  ``BEGIN IMMEDIATE`` does the same), or renews it if this holder still has it.
- ``TaskLease.check(tx)`` is the fence, run first in every transaction that changes state for
  the task (``FencedLedger``): it renews the lease only if holder and epoch are unchanged and it
  has not expired, and otherwise raises ``LeaseLostError``, which rolls the transaction back. The
  UPDATE locks the lease row until commit, so a takeover waits for a fenced change in progress
  and can never interleave with it.

Time is each node's own clock: nodes must keep their clocks in step (NTP), well within the lease.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

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


class TaskLease:
    """The lease of one task for one holder (``owner``), taken and renewed for ``duration``."""

    def __init__(self, ledger: Ledger, name: str, owner: str, duration: timedelta) -> None:
        """Lease ``name`` on ``ledger`` as ``owner``."""
        self.ledger = ledger
        self.name = name
        self.owner = owner
        self.duration = duration
        self.held: Held | None = None

    def hold(self) -> bool:
        """Take or renew the lease; whether this holder has it now (False also when the ledger cannot be reached)."""
        try:
            self.held = self._take()
        except LedgerError:
            self.held = None
        return self.held is not None

    def _take(self) -> Held | None:
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
        return Held(self.name, self.owner, epoch)

    def check(self, tx: Transaction) -> None:
        """The fence: renew the lease inside ``tx`` if still held at the same epoch, else raise ``LeaseLostError``."""
        held = self.held
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
                return
        self.held = None
        msg = f"lease of {self.name!r} lost by {self.owner}: another node holds it, or it expired"
        raise LeaseLostError(msg)

    def release(self) -> None:
        """Give the lease up (on stop) so that another node takes the task at once; never raises a ledger error."""
        held, self.held = self.held, None
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
            self.lease.check(tx)
            yield tx


def lease_holders(ledger: Ledger) -> dict[str, str | None]:
    """Task name -> node holding its lease now (None: free or expired)."""
    now = ledger.clock()
    with ledger.read() as conn:
        rows = conn.execute(select(task_leases)).all()
    return {r.name: r.node if r.owner is not None and (as_utc(r.expires_at) or now) > now else None for r in rows}
