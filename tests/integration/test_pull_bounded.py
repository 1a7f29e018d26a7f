"""guard pull takes its studies lazily: however long the list, only a few are in flight at once."""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING

from guard.config.settings import Settings
from guard.dicom.net import Peer
from guard.services.qr.pull import Puller, PullTarget, StudyOutcome, StudyResult

if TYPE_CHECKING:
    from collections.abc import Iterator

    from guard.ledger.ledger import Ledger


class _Recorder:
    def on_instances(self, count: int) -> None:
        pass

    def on_study(self, outcome: StudyOutcome) -> None:
        pass


class _TimedPuller(Puller):
    """A puller whose per-study work is a short wait (the scheduling is what is under test)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.finished = 0

    def _pull(self, target: PullTarget) -> StudyOutcome:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        threading.Event().wait(0.0005)
        with self.lock:
            self.running -= 1
            self.finished += 1
        result = StudyResult.FAILED if int(target.study_uid.rsplit(".", 1)[1]) % 10 == 7 else StudyResult.PULLED
        return StudyOutcome(target.study_uid, result, 1, "no" if result is StudyResult.FAILED else "")


def test_ten_thousand_studies_are_taken_a_few_at_a_time(ledger: Ledger) -> None:
    """10,000 targets: never more than twice the concurrency taken ahead of the finished ones; totals and audit add up."""
    concurrency = 3
    puller = _TimedPuller(Settings(), ledger, Peer("PACS", "127.0.0.1", 104), concurrency=concurrency, observer=_Recorder())
    taken_ahead = 0

    def targets() -> Iterator[PullTarget]:
        nonlocal taken_ahead
        for n in itertools.count():
            if n == 10_000:
                return
            with puller.lock:
                taken_ahead = max(taken_ahead, n - puller.finished)
            yield PullTarget(f"1.2.{n}")

    summary = puller.run(targets(), {"study_uids": 10_000})
    assert puller.most_running <= concurrency
    assert taken_ahead <= 2 * concurrency
    assert (summary.pulled, summary.failed, summary.instances) == (9_000, 1_000, 10_000)
    assert len(summary.failures) == 1_000
