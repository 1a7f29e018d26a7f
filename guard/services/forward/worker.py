"""Forwarding workers: claim, send, record; a heartbeat keeps their claims leased.

Each worker is a thread with its own ``Sender`` (``guard.services.archive``: one association
or HTTP connection, reused), built by ``sender_factory`` (by default the configured archive's).
Claims are leased in the ledger; a heartbeat thread renews the leases of every claim still
held, so a slow send keeps its claim while a killed process loses its claims after
``lease_seconds`` and another worker (or the restarted guard) takes them over.

Successful sends are recorded together, in one transaction for up to ``OUTCOME_FLUSH_SECONDS``
of sends (or the rest of the batch), instead of one fsync'd transaction each. A process killed
in between leaves those instances claimed: they are sent again when the lease expires, which
the archive takes as the same instance again (at least once, never lost; ADR 0002).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import structlog

from guard.config.settings import Settings
from guard.domain.errors import (
    ArchiveUnreachableError,
    GuardError,
    LedgerError,
    PeerError,
    PermanentPeerError,
    PermanentSpoolError,
    SpoolError,
)
from guard.domain.pacing import idle_wait
from guard.domain.retry import RetryPolicy, decide_retry
from guard.ledger.instances import Claim, claim_pending, mark_dead_lettered, mark_failed, mark_forwarded, release_claims, renew_leases
from guard.ledger.leases import new_owner
from guard.ledger.ledger import Ledger
from guard.runtime.threads import lower_priority, name_os_thread
from guard.services.archive import Sender, open_archive
from guard.services.boundary import FailureReporter
from guard.spool import Spool

log = structlog.get_logger("guard.forward")

SenderFactory = Callable[[], Sender]

#: Longest time a successful send waits to be recorded with the ones after it.
OUTCOME_FLUSH_SECONDS = 0.25


class Forwarder:
    """The pool of forwarding workers and their heartbeat."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        spool: Spool,
        sender_factory: SenderFactory | None = None,
        on_forwarded: Callable[[int], None] | None = None,
    ) -> None:
        """Forward per ``settings.forward``; ``sender_factory`` builds one sender per worker; ``on_forwarded(size)`` after each batch."""
        self.settings = settings
        self.on_forwarded = on_forwarded
        self.cfg = settings.forward
        self.ledger = ledger
        self.spool = spool
        self.sender_factory = sender_factory or open_archive(settings).sender
        self.owner_prefix = new_owner(settings.node_id)
        # Node-local spool: forward only what this node holds; shared: any node's instances.
        self.held_by = None if settings.spool.shared else ledger.node
        self.policy = RetryPolicy(
            max_attempts=self.cfg.max_attempts,
            max_age=timedelta(hours=self.cfg.max_age_hours),
            backoff_base=self.cfg.backoff_base,
            backoff_max=self.cfg.backoff_max,
        )
        self.lease = timedelta(seconds=self.cfg.lease_seconds)
        # Only without the listener in this process: a thread of lower priority holding the
        # interpreter lock would hold receiving back (priority inversion), not let it go first.
        self.nice = self.cfg.nice if settings.node.listener_process else 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._held: dict[str, set[int]] = {}
        self._held_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the workers and the heartbeat."""
        for index in range(self.cfg.workers):
            owner = f"{self.owner_prefix}:{index}"
            self._held[owner] = set()
            thread = threading.Thread(target=self._run_worker, args=(owner,), name=f"forward-{index}", daemon=True)
            self._threads.append(thread)
        self._threads.append(threading.Thread(target=self._run_heartbeat, name="forward-heartbeat", daemon=True))
        for thread in self._threads:
            thread.start()

    def alive(self) -> bool:
        """Whether every thread is still running (readiness)."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def wake(self) -> None:
        """Tell idle workers that new work has arrived."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Let each worker finish its current instance, give back the rest, and stop."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run_heartbeat(self) -> None:
        """Renew the leases of held claims every third of the lease."""
        interval = self.cfg.lease_seconds / 3
        while not self._stop.wait(interval):
            for owner in list(self._held):
                with self._held_lock:
                    ids = list(self._held[owner])
                try:
                    renew_leases(self.ledger, owner, ids, self.lease)
                except LedgerError:
                    log.exception("lease.renew_failed", action="lease.renew_failed", owner=owner)

    def _run_worker(self, owner: str) -> None:
        """The worker loop; each round is a boundary.

        An unexpected error is reported, the association is dropped (its state is unknown), and
        the loop goes on; claims the round held come back when their leases expire.
        """
        name_os_thread(threading.current_thread().name)
        # Its archive association's threads start from this one and inherit the priority.
        lower_priority(self.nice)
        sender = self.sender_factory()
        reporter = FailureReporter(self.ledger, f"forward-{owner.rsplit(':', 1)[-1]}")
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    idle_since = self._round(owner, sender, idle_since)
                    reporter.succeeded()
                except Exception as exc:  # noqa: BLE001 - the worker boundary: report (log + audit) and go on
                    reporter.failed(exc)
                    sender.close(abort=True)
                    self._stop.wait(min(self.cfg.backoff_max, 1.0))
        finally:
            sender.close()

    def _round(self, owner: str, sender: Sender, idle_since: float) -> float:
        """Claim and forward one batch, or idle; return when the worker was last busy."""
        claims = claim_pending(self.ledger, owner, self.cfg.batch_size, self.lease, held_by=self.held_by)
        if claims:
            self._forward_batch(owner, sender, claims)
            if self.on_forwarded is not None:
                self.on_forwarded(len(claims))
            return time.monotonic()
        idle = time.monotonic() - idle_since
        if idle > self.cfg.idle_release:
            sender.close()  # nothing to do when it holds no connection
        self._wake.wait(idle_wait(self.cfg.idle_poll, idle))
        self._wake.clear()
        return idle_since

    def _forward_batch(self, owner: str, sender: Sender, claims: list[Claim]) -> None:
        """Send each claim in turn, recording successes together; on stop, give back those not yet attempted."""
        with self._held_lock:
            self._held[owner] = {c.id for c in claims}
        sent: list[tuple[Claim, int]] = []
        oldest = 0.0
        # The next file is read from disk while this one is sent (ADR 0025); one not sent after all is given back.
        ahead: Claim | None = None
        try:
            for index, claim in enumerate(claims):
                if self._stop.is_set():
                    self._record_forwarded(owner, sent)
                    release_claims(self.ledger, owner, [c.id for c in claims[index:]])
                    return
                ahead = claims[index + 1] if index + 1 < len(claims) else None
                if ahead is not None:
                    self.spool.read_ahead(ahead.spool_path)
                try:
                    status = self._forward_one(owner, sender, claim)
                except ArchiveUnreachableError as exc:
                    # No point trying the rest of the batch now: each goes back with its backoff.
                    self._record_forwarded(owner, sent)
                    for pending in claims[index:]:
                        self._record_failure(owner, pending, exc, permanent=False)
                    return
                if status is None:
                    continue
                if not sent:
                    oldest = time.monotonic()
                sent.append((claim, status))
                if time.monotonic() - oldest >= OUTCOME_FLUSH_SECONDS:
                    self._record_forwarded(owner, sent)
                    sent = []
            self._record_forwarded(owner, sent)
        finally:
            if ahead is not None:
                self.spool.drop_pages(self.spool.path_of(ahead.spool_path))
            with self._held_lock:
                self._held[owner] = set()

    def _record_forwarded(self, owner: str, sent: list[tuple[Claim, int]]) -> None:
        """Record successful sends in one transaction, then stop renewing their leases."""
        if not sent:
            return
        archive_ae = self.settings.archive.ae_title
        with self.ledger.transaction() as tx:
            for claim, status in sent:
                mark_forwarded(tx, claim, owner, status=status, archive_ae=archive_ae)
        with self._held_lock:
            self._held[owner].difference_update(claim.id for claim, _ in sent)

    def _forward_one(self, owner: str, sender: Sender, claim: Claim) -> int | None:
        """Send one instance; its status on success (to be recorded), None when the failure has been recorded."""
        try:
            # Gone or not Part 10: permanent (sending again will not bring it back); an I/O error: retried.
            path = self.spool.readable(claim.spool_path)
        except SpoolError as exc:
            self._record_failure(owner, claim, exc, permanent=isinstance(exc, PermanentSpoolError))
            return None
        try:
            return sender.send(path, claim.sop_class_uid, claim.transfer_syntax)
        except ArchiveUnreachableError:
            raise
        except PeerError as exc:
            self._record_failure(owner, claim, exc, permanent=isinstance(exc, PermanentPeerError))
        finally:
            # Read once: a retry or a check reads it from disk again (ADR 0025).
            self.spool.drop_pages(path)
        return None

    def _record_failure(self, owner: str, claim: Claim, exc: GuardError, *, permanent: bool) -> None:
        """Retry later or dead-letter, per the policy."""
        status = exc.status if isinstance(exc, PeerError) else None
        with self.ledger.transaction() as tx:
            decision = decide_retry(
                self.policy,
                permanent=permanent,
                unreachable=isinstance(exc, ArchiveUnreachableError),
                error=str(exc),
                attempts=claim.attempts,
                received_at=claim.received_at,
                now=tx.clock(),
            )
            if decision.dead_letter:
                mark_dead_lettered(tx, claim, owner, status=status, reason=decision.reason)
            elif decision.retry_at is not None:
                mark_failed(tx, claim, owner, status=status, error=decision.reason, retry_at=decision.retry_at)
