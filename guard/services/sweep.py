"""The spool sweep: what a crash left in the spool is removed, at start and then periodically.

A process killed during a receive leaves its temporary file in ``.incoming``; one killed
between the spool's rename and the ledger commit leaves a complete file that no ledger row
names. Neither instance was acknowledged (invariant 1: Success comes after the commit), so the
sender still holds it and sends it again. The sweep removes:

- a file in ``.incoming`` that no receive in progress holds (``runtime.incoming_in_use``);
- a file in a study folder, named as the spool names its files, that no ledger row names,
  whatever that row's version or state (invariant 2: a named file is never removed).

Either only once it has been quiet (neither written nor renamed) for twice ``node.network_timeout``:
a receive in progress writes at least once per ``network_timeout`` or is aborted, so a quiet
file is nobody's, even another process's. Study folders are compared with the ledger once, at
start, before the listener opens; files that were too recent then are looked at again on each
round until they are quiet or named. A file placed again under the same name since it was
listed (the sender re-sent the instance) is never removed (``Spool.remove_if_unchanged``). When
the ledger cannot be read nothing is removed. Each round that removed something is one
``security.alert`` with ``alert: spool-leftovers-removed``.

When the spool's storage fails (a ``TransientSpoolError``: a folder that cannot be listed, a
file that cannot be removed on a read-only volume) nothing is lost: the round removes what it
can, the failure is reported like any loop failure (``alert: spool-sweep-failed``, the first of
a run), a file it could not remove is judged again next round, and study folders it could not
list at start are listed in full on the next round.

A crash leaves at most one such file per association in flight, so more unnamed files than
both listeners can serve at once (twice ``node.max_associations``, over the process's life), or any at all next to a ledger
without a single instance, mean the ledger is not the spool's (restored from an old backup,
or a new one): then no study file is removed, and one ``security.alert`` with ``alert:
spool-unknown-files`` asks a person to look (``docs/runbook.md``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from guard import runtime
from guard.config.settings import Settings
from guard.domain.errors import LedgerError, TransientSpoolError
from guard.domain.states import AuditEvent, Outcome
from guard.ledger.ledger import Ledger
from guard.ledger.spool_files import has_instances, named_spool_paths
from guard.services.boundary import FailureReporter
from guard.spool import Spool, SpoolEntry

log = structlog.get_logger("guard.services.sweep")

#: Paths listed in one audit record at most (the counts are always complete).
_LISTED = 50


@dataclass
class SweepResult:
    """What one round removed, and the storage failure that stopped part of it (None: none)."""

    partial: list[SpoolEntry] = field(default_factory=list)
    orphans: list[SpoolEntry] = field(default_factory=list)
    failure: TransientSpoolError | None = None

    @property
    def removed(self) -> list[SpoolEntry]:
        """Every file removed."""
        return self.partial + self.orphans


class SpoolSweep:
    """Removes crash leftovers from the spool; ``run_once`` at start, then a background round every ``network_timeout``."""

    def __init__(self, settings: Settings, ledger: Ledger, spool: Spool, clock: Callable[[], float] = time.time) -> None:
        """Sweep ``spool`` against ``ledger``; files must have been quiet for twice ``node.network_timeout``."""
        self.ledger = ledger
        self.spool = spool
        self.actor = settings.node.ae_title
        self.quiet = 2 * settings.node.network_timeout
        self.interval = max(1.0, settings.node.network_timeout)
        # Receives in flight at a crash: at most one per association, on the plain and the TLS listener.
        self.most_orphans = 2 * settings.node.max_associations
        self.clock = clock
        #: Study files without a ledger row that were too recent to remove, by relative path.
        self._suspects: dict[str, SpoolEntry] = {}
        self._refused = False
        self._orphans_removed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._report = FailureReporter(ledger, "spool-sweep")
        #: Whether the study folders are still to be listed in full (at start, and until a listing has worked).
        self._full_listing_due = True

    def run_once(self, *, at_start: bool = False) -> SweepResult:
        """One round: incoming leftovers; study folders in full at start (or until that worked), else the files left to judge."""
        result = SweepResult()
        try:
            result.partial = self._sweep_incoming(result)
            full = at_start or self._full_listing_due
            entries = list(self.spool.stored_files()) if full else list(self._suspects.values())
            self._full_listing_due = False
            result.orphans = self._sweep_stored(entries, result)
        except TransientSpoolError as exc:
            result.failure = exc
        if result.removed:
            self._audit(result, at_start=at_start)
        return result

    def start(self) -> SpoolSweep:
        """Sweep now (before the listener opens), then every ``interval`` seconds in a daemon thread."""
        self._report_round(self.run_once(at_start=True))
        self._thread = threading.Thread(target=self._loop, name="spool-sweep", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background rounds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                result = self.run_once()
            except Exception as exc:  # noqa: BLE001 - the loop's boundary: reported, and the next round tries again
                self._report.failed(exc)
            else:
                self._report_round(result)

    def _report_round(self, result: SweepResult) -> None:
        if result.failure is not None:
            self._report.failed(result.failure)
        else:
            self._report.succeeded()

    def _remove(self, entries: list[SpoolEntry], result: SweepResult) -> list[SpoolEntry]:
        """Remove each entry that is unchanged; the removed ones. A removal the storage refuses is noted in ``result``."""
        removed: list[SpoolEntry] = []
        for entry in entries:
            try:
                if self.spool.remove_if_unchanged(entry):
                    removed.append(entry)
            except TransientSpoolError as exc:
                result.failure = result.failure or exc
                if entry.study_uid:
                    self._suspects[entry.relative_path] = entry  # judged again next round
        return removed

    def _quiet(self, entry: SpoolEntry) -> bool:
        return self.clock() - entry.touched >= self.quiet

    def _sweep_incoming(self, result: SweepResult) -> list[SpoolEntry]:
        """Temporary files no receive holds, once quiet."""
        entries = self.spool.leftover_incoming()
        if not entries:
            return []
        held = {path.resolve() for path in runtime.incoming_in_use()}
        return self._remove([e for e in entries if e.path.resolve() not in held and self._quiet(e)], result)

    def _sweep_stored(self, entries: list[SpoolEntry], result: SweepResult) -> list[SpoolEntry]:
        """Study files no ledger row names, once quiet and only as many as a crash can leave; the recent ones are judged again."""
        orphans = self._unnamed_and_quiet(entries)
        if not orphans or self._refused:
            return []
        try:
            refusal = None if has_instances(self.ledger) else "ledger-without-instances"
        except LedgerError:
            log.exception("sweep.ledger_unreadable", action="sweep.ledger_unreadable")
            return []
        if refusal is None and self._orphans_removed + len(orphans) > self.most_orphans:
            refusal = "more-than-a-crash-leaves"
        if refusal is not None:
            self._refuse(orphans, refusal)
            return []
        removed = self._remove(orphans, result)
        self._orphans_removed += len(removed)
        return removed

    def _unnamed_and_quiet(self, entries: list[SpoolEntry]) -> list[SpoolEntry]:
        """The entries no ledger row names and that are quiet; unnamed recent ones (and unjudged ones) become suspects."""
        orphans: list[SpoolEntry] = []
        named_by_study: dict[str, frozenset[str]] = {}
        for entry in entries:
            self._suspects.pop(entry.relative_path, None)
            try:
                if entry.study_uid not in named_by_study:
                    named_by_study[entry.study_uid] = named_spool_paths(self.ledger, entry.study_uid)
            except LedgerError:
                log.exception("sweep.ledger_unreadable", action="sweep.ledger_unreadable", study_uid=entry.study_uid)
                self._suspects[entry.relative_path] = entry  # not judged: nothing is removed without the ledger's word
                continue
            if entry.relative_path in named_by_study[entry.study_uid]:
                continue
            if not self._quiet(entry):
                self._suspects[entry.relative_path] = entry
            else:
                orphans.append(entry)
        return orphans

    def _refuse(self, orphans: list[SpoolEntry], reason: str) -> None:
        """Keep every unnamed study file and say why, once per process (they are not looked at again until the next start)."""
        self._refused = True
        detail = {
            "alert": "spool-unknown-files",
            "reason": reason,
            "files": len(orphans),
            "limit": self.most_orphans,
            "paths": [e.relative_path for e in orphans[:_LISTED]],
        }
        log.error("spool.unknown_files", action="spool.unknown_files", **detail)
        self.ledger.audit_or_log(AuditEvent.SECURITY_ALERT, Outcome.FAILURE, actor=self.actor, detail=detail)

    def _audit(self, result: SweepResult, *, at_start: bool) -> None:
        paths = [e.relative_path for e in result.removed]
        detail = {
            "alert": "spool-leftovers-removed",
            "reason": "crash-leftovers",
            "when": "start" if at_start else "periodic",
            "partial_files": len(result.partial),
            "orphan_files": len(result.orphans),
            "bytes": sum(e.identity.size for e in result.removed),
            "paths": paths[:_LISTED],
        }
        log.warning("spool.swept", action="spool.swept", **detail)
        self.ledger.audit_or_log(AuditEvent.SECURITY_ALERT, Outcome.SUCCESS, actor=self.actor, detail=detail)
