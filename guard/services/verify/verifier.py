"""The byte verification policies: at confirmation, the rolling re-verification, and the delete-time sample.

Each check groups its instances by series, asks the retriever for the digests of what the
archive returns, compares them with the ledger's (``verify.compare``), and records every result
(``guard.ledger.byte_checks``), which sends back or flags what did not match. A retrieve that
could not be made (a ``PeerError``) records nothing about the instances: it is doubt, not
evidence, and the delete gate refuses with ``archive-unreachable``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

import structlog

from guard.config.settings import Settings
from guard.config.verify import CompareMode, ConfirmationCheck
from guard.dicom.retrieve import digest_file
from guard.domain.comparison import DigestError
from guard.domain.errors import PeerError
from guard.domain.sampling import sample_per_series
from guard.domain.states import ByteResult
from guard.ledger.archive_loss import FoundBy
from guard.ledger.byte_checks import (
    CheckContext,
    CheckResult,
    CheckTarget,
    confirmed_in_study,
    due_for_rolling,
    newly_confirmed,
    record_checks,
    schedule_rolling,
    store_content_digest,
)
from guard.ledger.ledger import Ledger
from guard.runtime.metrics import BYTE_CHECKS
from guard.services.verify.retriever import ByteRetriever
from guard.spool import Spool

log = structlog.get_logger("guard.services.verify")


@dataclass(frozen=True)
class SampleOutcome:
    """What a delete-time sample found: the instances compared, those that did not match, or why no retrieve could be made."""

    checked: set[str] | None
    not_matching: frozenset[str] = field(default_factory=frozenset)
    error: str | None = None


class ByteVerifier:
    """Runs byte checks with one retriever, by the policies of ``settings.verify``."""

    def __init__(self, settings: Settings, ledger: Ledger, spool: Spool, retriever: ByteRetriever) -> None:
        """Check against the archive through ``retriever``; content digests are computed from ``spool`` copies."""
        self.settings = settings
        self.cfg = settings.verify
        self.ledger = ledger
        self.spool = spool
        self.retriever = retriever
        self.window = timedelta(days=self.cfg.reverify_days)

    @property
    def method(self) -> str:
        """The retrieve method in use (``c-get``, ``c-move``, ``wado-rs``)."""
        return str(getattr(self.retriever, "method", type(self.retriever).__name__))

    # -- one check ------------------------------------------------------------------

    def check(self, targets: list[CheckTarget], found_by: FoundBy) -> list[CheckResult]:
        """Retrieve and compare ``targets``, one retrieve per series; record the results. A failed retrieve raises ``PeerError``."""
        by_series: dict[tuple[str, str], list[CheckTarget]] = defaultdict(list)
        for target in targets:
            by_series[target.study_uid, target.series_uid].append(target)
        by_study: dict[str, list[CheckResult]] = defaultdict(list)
        try:
            for (study_uid, series_uid), members in sorted(by_series.items()):
                got = self.retriever.digests(study_uid, series_uid, [t.sop_instance_uid for t in members])
                by_study[study_uid].extend(self._compare(t, got.get(t.sop_instance_uid)) for t in members)
        finally:
            self._record(by_study, found_by)  # what was compared before a failure still counts
        return [result for results in by_study.values() for result in results]

    def _compare(self, target: CheckTarget, actual: str | None) -> CheckResult:
        expected = self._expected(target)
        if expected is None:
            result = ByteResult.UNVERIFIABLE
        elif actual is None:
            result = ByteResult.ABSENT
        else:
            result = ByteResult.MATCH if actual == expected else ByteResult.DIFFER
        return CheckResult(target, result, expected, actual)

    def _expected(self, target: CheckTarget) -> str | None:
        """The reference digest: the receive digest, or (content) the content digest, computed from the spool copy the first time."""
        if self.cfg.compare is CompareMode.EXACT:
            return target.sha256
        if target.content_sha256:
            return target.content_sha256
        if target.spool_path is None or not self.spool.path_of(target.spool_path).is_file():
            return None
        try:
            digest = digest_file(self.spool.path_of(target.spool_path), CompareMode.CONTENT)
        except (DigestError, OSError) as exc:
            log.warning("verify.no_reference", action="verify.no_reference", sop_instance_uid=target.sop_instance_uid, error=str(exc))
            return None
        store_content_digest(self.ledger, target.instance_id, digest)
        return digest

    def _record(self, by_study: dict[str, list[CheckResult]], found_by: FoundBy) -> None:
        context = CheckContext(
            found_by=found_by,
            method=self.method,
            compare=self.cfg.compare.value,
            window=self.window,
            max_resends=self.settings.confirm.max_resends,
        )
        for study_uid, results in by_study.items():
            if not results:
                continue
            record_checks(self.ledger, study_uid, results, context, lambda p: self.spool.path_of(p).is_file())
            for result in results:
                BYTE_CHECKS.labels(found_by=found_by.value, result=result.result.value).inc()

    # -- the policies ---------------------------------------------------------------

    def confirmation_round(self) -> bool:
        """Check newly confirmed instances by ``verify.at_confirmation`` (flagged ones always); schedule the rest; whether any was new."""
        fresh = newly_confirmed(self.ledger)
        if not fresh:
            return False
        policy = self.cfg.at_confirmation
        if policy is ConfirmationCheck.ALL:
            chosen = fresh
        else:
            per_series = 0 if policy is ConfirmationCheck.NONE else self.cfg.confirmation_sample
            chosen = _sample(fresh, per_series)
        chosen_ids = {t.instance_id for t in chosen}
        schedule_rolling(self.ledger, [t for t in fresh if t.instance_id not in chosen_ids], self.window)
        try:
            self.check(chosen, FoundBy.CONFIRMATION)
        except PeerError as exc:
            # The chosen stay unscheduled: the next round tries them again.
            log.warning("verify.retrieve_failed", action="verify.retrieve_failed", found_by="confirmation", error=str(exc))
        return True

    def rolling_round(self) -> bool:
        """Check the instances whose rolling re-check is due (at most ``verify.reverify_batch``); whether any was due."""
        if not self.cfg.reverify_days:
            return False
        due = due_for_rolling(self.ledger, self.cfg.reverify_batch)
        if not due:
            return False
        try:
            self.check(due, FoundBy.REVERIFY)
        except PeerError as exc:
            log.warning("verify.retrieve_failed", action="verify.retrieve_failed", found_by="reverify", error=str(exc))
        return True

    def at_delete(self, study_uid: str) -> SampleOutcome:
        """The delete-time sample: ``verify.delete_sample`` confirmed instances per series (flagged ones always), retrieved now."""
        chosen = _sample(confirmed_in_study(self.ledger, study_uid), self.cfg.delete_sample)
        try:
            results = self.check(chosen, FoundBy.DELETE)
        except PeerError as exc:
            return SampleOutcome(checked=None, error=str(exc))
        return SampleOutcome(
            checked={r.target.sop_instance_uid for r in results},
            not_matching=frozenset(r.target.sop_instance_uid for r in results if r.result is not ByteResult.MATCH),
        )


def _sample(targets: list[CheckTarget], per_series: int) -> list[CheckTarget]:
    """``per_series`` targets of each series at random, and every flagged one."""
    series: dict[str, list[str]] = defaultdict(list)
    for target in targets:
        series[target.series_uid].append(target.sop_instance_uid)
    chosen = sample_per_series(series, per_series, always=[t.sop_instance_uid for t in targets if t.flagged])
    picked = {uid for uids in chosen.values() for uid in uids}
    return [t for t in targets if t.sop_instance_uid in picked]
