"""The confirmation loops: ask the archive for proof, re-verify, clean the spool, answer sources.

Two threads: ``confirm`` (commitment requests, C-FIND proof, re-verification, spool
retention) and ``source-reports`` (Storage Commitment reports owed to sources). Each round is
a boundary: an error is logged and the next round tries again.

With several nodes on one ledger each part runs on one node at a time, under a task lease
(``guard.ledger.leases``): ``confirm`` and ``source-reports`` once per cluster, the spool
clean-up once per spool (per node when the spool is node-local). Every state change of a part
goes through its ``FencedLedger``, so a node that lost the lease changes nothing. Reports from
the archive may reach any node: they are applied by whichever node receives them.

When the loops look (``guard.domain.pacing``): a study is asked about once it has had nothing
forwarded for ``confirm.batch_wait`` (or its request is full), so a forwarded batch rings the
``confirm`` loop's alarm for then, not now, and the round also says when the earliest waiting
study becomes due; a burst of batches costs a round per study that comes due, not one per batch.
A report from the archive or a source's request rings both loops at once. Otherwise each loop
looks every ``confirm.poll_interval`` after work, stretching while idle, for what only the
ledger knows (another node's work, retries coming due). Re-verification and spool retention,
whose work comes due hours apart, are looked for at most every ``HOUSEKEEPING_INTERVAL``.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from pydicom.uid import generate_uid

from guard.config.settings import ConfirmMode, Settings
from guard.dicom.commitment import Report, deliver_report, request_commitment
from guard.dicom.net import archive_peer, source_peer
from guard.domain.errors import GuardError, PeerError
from guard.domain.pacing import IDLE_WAIT_MAX, Alarm, idle_wait
from guard.domain.retry import backoff_schedule
from guard.ledger.confirmations import (
    ConfirmPolicy,
    apply_find,
    apply_report,
    commitment_schedule,
    due_for_find,
    expire_outbound,
    fail_outbound,
    open_outbound,
    postpone_find,
)
from guard.ledger.leases import FencedLedger, TaskLease, new_owner
from guard.ledger.ledger import Ledger
from guard.ledger.source_commitments import due_inbound, evaluate_inbound, mark_inbound_reported, postpone_inbound, record_inbound
from guard.ledger.verification import (
    apply_reverification,
    due_for_reverification,
    removable_spool_copies,
    remove_spool_copy,
    spool_holder,
)
from guard.runtime.metrics import COMMITMENT_LATENCY, COMMITMENT_REQUESTS, LOST_IN_ARCHIVE, MISSING_IN_ARCHIVE, SPOOL_REMOVED
from guard.services.archive import Archive, open_archive
from guard.services.boundary import FailureReporter
from guard.services.verify.verifier import ByteVerifier
from guard.spool import Spool

log = structlog.get_logger("guard.confirm")


#: Backoff: ``base`` seconds doubled per attempt, at most ``cap`` (the one function, ``guard.domain.retry``).
exponential = backoff_schedule

#: The shortest wait for work the ledger says is due soon, seconds: a clock that stands still cannot make a loop spin.
SHORTEST_WAIT = 0.05
#: Re-verification and spool retention come due hours apart: a loop busy with new studies looks for them at most this often, seconds.
HOUSEKEEPING_INTERVAL = IDLE_WAIT_MAX


@dataclass(frozen=True)
class Round:
    """What a round found: whether it had work, and when (``time.monotonic()``) the next work it knows of becomes due."""

    busy: bool
    next_due: float = math.inf


class Confirmer:
    """Runs the confirmation loops and answers the DICOM handlers' commitment events."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        spool: Spool,
        *,
        wake_loops: Callable[[], None] | None = None,
        observe_latency: Callable[[float], None] = COMMITMENT_LATENCY.observe,
        archive: Archive | None = None,
        verifier: ByteVerifier | None = None,
    ) -> None:
        """Confirm per ``settings.archive.confirm`` and ``settings.confirm``.

        ``wake_loops`` replaces the local wake and ``observe_latency`` the local metric when the
        loops run in another process (the listener process hands reports and requests, and the
        report latencies, to the main process). ``archive`` lists what the archive holds (C-FIND
        or QIDO-RS; by default the configured archive's). With a ``verifier``, each round of the
        ``confirm`` lease also runs the byte checks due (``settings.verify``).
        """
        self.settings = settings
        self.verifier = verifier
        self._wake_loops = wake_loops
        self._observe_latency = observe_latency
        self.cfg = settings.confirm
        self.ledger = ledger
        self.spool = spool
        self.mode = settings.archive.confirm
        self.archive = archive_peer(settings.archive)  # Storage Commitment (DIMSE only)
        self.index = archive or open_archive(settings)
        self.policy = ConfirmPolicy(
            mode=self.mode, max_resends=self.cfg.max_resends, backoff=exponential(self.cfg.retry_base, self.cfg.retry_max)
        )
        self._stop = threading.Event()
        self._alarms = {"confirm": Alarm(), "source-reports": Alarm()}
        # Instances forwarded since the last look at what is due, and how many fill a waiting request.
        self._forwarded_lock = threading.Lock()
        self._forwarded = 0
        self._room = self.cfg.max_references
        self._looked: dict[str, float] = {}  # housekeeping part -> when it was last looked for (time.monotonic())
        self._threads: list[threading.Thread] = []
        owner = new_owner(settings.node_id)
        duration = timedelta(seconds=settings.node.lease_seconds)
        spool_task = "spool-clean" if settings.spool.shared else f"spool-clean:{settings.node_id}"
        self.leases = {name: TaskLease(ledger, name, owner, duration) for name in ("confirm", "source-reports", spool_task)}
        self._fenced = {name: FencedLedger(ledger, lease) for name, lease in self.leases.items()}
        self._archive_ledger = self._fenced["confirm"]
        self._reports_ledger = self._fenced["source-reports"]
        self._spool_ledger = self._fenced[spool_task]
        self._spool_held_by = None if settings.spool.shared else ledger.node

    def start(self) -> None:
        """Start both loops."""
        for name, target in (("confirm", self._confirm_round), ("source-reports", self._reports_round)):
            thread = threading.Thread(target=self._loop, args=(name, target, self._alarms[name]), name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current round."""
        self._stop.set()
        for alarm in self._alarms.values():
            alarm.ring()
        for thread in self._threads:
            thread.join(timeout)
        for lease in self.leases.values():
            lease.release()

    def alive(self) -> bool:
        """Whether every thread is still running (readiness)."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def wake(self) -> None:
        """Run a round of both loops now (a report from the archive, a source's request)."""
        if self._wake_loops is not None:
            self._wake_loops()
        for alarm in self._alarms.values():
            alarm.ring()

    def forwarded(self, count: int = 1) -> None:
        """``count`` instances were forwarded: ring the ``confirm`` loop for when they can be due, not before.

        Their study's commitment request is due ``confirm.batch_wait`` after its last forwarded
        instance, or at once if they may have filled it (``confirm.max_references``); C-FIND proof
        ``confirm.find_delay`` after forwarding.
        """
        with self._forwarded_lock:
            self._forwarded += count
            full = self._forwarded >= self._room
        delays = []
        if self.mode in {ConfirmMode.COMMITMENT, ConfirmMode.BOTH}:
            delays.append(0.0 if full else self.cfg.batch_wait)
        if self.mode in {ConfirmMode.FIND, ConfirmMode.BOTH}:
            delays.append(self.cfg.find_delay)
        self._alarms["confirm"].ring_at(time.monotonic() + min(delays, default=0.0))

    def _loop(self, name: str, round_fn: Callable[[], Round], alarm: Alarm) -> None:
        """Run rounds until stopped; each round is a boundary whose errors are reported (log + audit).

        After a round the loop waits until the work it knows of comes due, or the alarm rings, or
        ``idle_wait`` has passed, whichever is first: a round that found nothing to do, and no
        alarm, let the wait stretch, so a guard with nothing to do does not query the ledger
        every ``poll_interval``.
        """
        reporter = FailureReporter(self.ledger, name)
        active = time.monotonic()
        while not self._stop.is_set():
            next_due = math.inf
            try:
                result = round_fn()
                next_due = result.next_due
                if result.busy:
                    active = time.monotonic()
                reporter.succeeded()
            except Exception as exc:  # noqa: BLE001 - the loop boundary: report, and the next round tries again
                reporter.failed(exc)
                active = time.monotonic()
            now = time.monotonic()
            if alarm.wait(min(now + idle_wait(self.cfg.poll_interval, now - active), next_due)):
                active = time.monotonic()

    def _monotonic(self, at: datetime) -> float:
        """The ``time.monotonic()`` reading at ledger time ``at`` (at least ``SHORTEST_WAIT`` from now)."""
        return time.monotonic() + max(SHORTEST_WAIT, (at - self.ledger.clock()).total_seconds())

    # -- towards the archive ------------------------------------------------------------

    def _confirm_round(self) -> Round:
        """One round of the parts whose lease this node holds."""
        result = self._archive_round() if self.leases["confirm"].hold() else Round(busy=False)
        if self._spool_ledger.lease.hold() and self._housekeeping("spool", self._clean_spool):
            result = Round(busy=True, next_due=result.next_due)
        if result.busy:  # instances may have been confirmed here (C-FIND, byte checks): reports may be due
            self._alarms["source-reports"].ring()
        return result

    def _archive_round(self) -> Round:
        """Commitment requests, C-FIND proof and re-verification (the ``confirm`` lease)."""
        busy = expire_outbound(self._archive_ledger, self.policy.backoff) > 0
        next_due = math.inf
        if self.mode in {ConfirmMode.COMMITMENT, ConfirmMode.BOTH}:
            requests = self._request_commitments()
            busy, next_due = requests.busy or busy, requests.next_due
        if self.mode in {ConfirmMode.FIND, ConfirmMode.BOTH}:
            busy = self._find_confirmations() or busy
        busy = self._housekeeping("reverify", self._reverify) or busy
        if self.verifier is not None:
            busy = self.verifier.confirmation_round() or busy
            busy = self.verifier.rolling_round() or busy
        return Round(busy, next_due)

    def _housekeeping(self, part: str, look: Callable[[], bool]) -> bool:
        """Run ``look`` if it found work last time or was last run ``HOUSEKEEPING_INTERVAL`` ago; whether it found work."""
        now = time.monotonic()
        if now - self._looked.get(part, -math.inf) < HOUSEKEEPING_INTERVAL:
            return False
        busy = look()
        self._looked[part] = -math.inf if busy else now  # more may be due (each look is bounded): look again next round
        return busy

    def _request_commitments(self) -> Round:
        """Ask for commitment of each study due; when the next waiting one becomes due."""
        with self._forwarded_lock:
            self._forwarded = 0  # what is forwarded from now on the query below may not see
        schedule = commitment_schedule(self.ledger, self.cfg.max_references, timedelta(seconds=self.cfg.batch_wait))
        with self._forwarded_lock:
            self._room = schedule.room
        due = schedule.due
        for study_uid, refs in due:
            if self._stop.is_set():
                break
            transaction_uid = generate_uid()
            open_outbound(
                self._archive_ledger,
                transaction_uid=transaction_uid,
                archive_ae=self.archive.ae_title,
                study_uid=study_uid,
                refs=refs,
                timeout=self.cfg.commitment_timeout,
            )
            try:
                request_commitment(
                    self.settings.node.ae_title,
                    self.archive,
                    transaction_uid=transaction_uid,
                    references=[(r.sop_class_uid, r.sop_instance_uid) for r in refs],
                    timeout=self.settings.forward.timeout,
                    report_wait=self.cfg.report_wait,
                    on_report=lambda report, ae: self.on_archive_report(report, ae, None),
                )
            except PeerError as exc:
                COMMITMENT_REQUESTS.labels(outcome="failed").inc()
                fail_outbound(self._archive_ledger, transaction_uid, str(exc), self.policy.backoff)
                break
            COMMITMENT_REQUESTS.labels(outcome="sent").inc()
        return Round(bool(due), math.inf if schedule.next_due_at is None else self._monotonic(schedule.next_due_at))

    def _find_confirmations(self) -> bool:
        due = list(due_for_find(self.ledger, timedelta(seconds=self.cfg.find_delay)))
        for study_uid in due:
            if self._stop.is_set():
                break
            try:
                held = self.index.study_instances(study_uid)
            except PeerError as exc:
                log.warning("confirm.find_failed", action="confirm.find_failed", study_uid=study_uid, error=str(exc))
                postpone_find(self._archive_ledger, study_uid, self.policy.backoff)
                continue
            apply_find(self._archive_ledger, study_uid, held, self.policy, self._has_copy)
        return bool(due)

    def _reverify(self) -> bool:
        interval = timedelta(hours=self.cfg.reverify_interval_hours)
        due = list(due_for_reverification(self.ledger, interval))
        for study_uid in due:
            if self._stop.is_set():
                break
            try:
                held = self.index.study_instances(study_uid)
            except PeerError as exc:
                log.warning("reverify.failed", action="reverify.failed", study_uid=study_uid, error=str(exc))
                break
            for missing in apply_reverification(self._archive_ledger, study_uid, held, self._has_copy, max_resends=self.cfg.max_resends):
                MISSING_IN_ARCHIVE.inc()
                if missing.spool_path is None:
                    LOST_IN_ARCHIVE.inc()
        return bool(due)

    def _has_copy(self, relative: str) -> bool:
        """Whether an instance's spool copy is there: here, or (node-local spool) on the node that holds it."""
        if self.spool.path_of(relative).is_file():
            return True
        holder = None if self.settings.spool.shared else spool_holder(self.ledger, relative)
        return holder is not None and holder != self.ledger.node

    def _clean_spool(self) -> bool:
        due = list(removable_spool_copies(self.ledger, timedelta(hours=self.cfg.spool_grace_hours), held_by=self._spool_held_by))
        for instance_id, relative in due:
            # The file goes inside the fenced transaction that records it: never after the lease was lost.
            try:
                removed = remove_spool_copy(self._spool_ledger, instance_id, functools.partial(self._unlink, relative))
            except OSError as exc:
                log.warning("spool.remove_failed", action="spool.remove_failed", path=relative, error=str(exc))
                continue
            if removed:
                SPOOL_REMOVED.inc()
        return bool(due)

    def _unlink(self, relative: str) -> None:
        self.spool.path_of(relative).unlink(missing_ok=True)

    def on_archive_report(self, report: Report, reporter_ae: str, peer_address: str | None) -> bool:
        """An N-EVENT-REPORT from the archive; False when it names no transaction the guard opened."""
        result = apply_report(
            self.ledger,
            transaction_uid=report.transaction_uid,
            reporter_ae=reporter_ae,
            peer_address=peer_address,
            successes=report.successes,
            failures=report.failures,
            policy=self.policy,
        )
        if result.latency_seconds is not None:
            self._observe_latency(result.latency_seconds)
        if result.known:  # instances confirmed or sent back: spool copies and source reports may be due
            self.wake()
        return result.known

    # -- towards sources ----------------------------------------------------------------

    def on_source_request(self, *, transaction_uid: str, source_ae: str, peer_address: str, references: list[tuple[str, str]]) -> None:
        """A source asked for commitment: store it; the report follows when the facts allow."""
        record_inbound(
            self.ledger,
            transaction_uid=transaction_uid,
            source_ae=source_ae,
            peer_address=peer_address,
            references=references,
            deadline=timedelta(seconds=self.cfg.source_report_deadline),
        )
        self.wake()

    def _reports_round(self) -> Round:
        """One round of reports to sources; busy when a report went out or a delivery failed.

        A request that cannot be answered truthfully yet is left as it is, without a write: the
        loop looks again after ``confirm.poll_interval``, or at once when the archive reports.
        """
        if not self.leases["source-reports"].hold():
            return Round(busy=False)
        ledger = self._reports_ledger
        busy, next_due = False, math.inf
        for transaction_uid in due_inbound(ledger):
            if self._stop.is_set():
                break
            verdict = evaluate_inbound(ledger, transaction_uid, arrival_grace=timedelta(seconds=self.cfg.source_arrival_grace))
            now = ledger.clock()
            if not verdict.ready:
                next_due = time.monotonic() + self.cfg.poll_interval
                continue
            busy = True
            source = self.settings.source(verdict.source_ae)
            # Report to the source's configured host; without one, to the address it asked from.
            host = (source.host if source is not None else "") or verdict.peer_address
            if source is None or not host:
                error = "source is no longer configured, or has no address to report to"
                postpone_inbound(
                    ledger, transaction_uid, now + timedelta(seconds=self.cfg.report_retry_max), error=error, count_attempt=True
                )
                continue
            try:
                deliver_report(
                    self.settings.node.ae_title,
                    source_peer(source, host),
                    transaction_uid=transaction_uid,
                    successes=verdict.successes,
                    failures=verdict.failures,
                    timeout=self.settings.forward.timeout,
                )
            except (PeerError, GuardError) as exc:
                delay = exponential(self.cfg.retry_base, self.cfg.report_retry_max)(verdict.attempts + 1)
                postpone_inbound(ledger, transaction_uid, now + delay, error=str(exc), count_attempt=True)
                continue
            mark_inbound_reported(ledger, verdict, host)
        return Round(busy, next_due)
