"""What ``guard pull`` shows: progress bars for studies and instances, then a summary table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from guard.config.settings import Settings
from guard.dicom.net import Peer
from guard.ledger.ledger import Ledger
from guard.services.qr.pull import (
    Puller,
    PullSummary,
    PullTarget,
    StudyOutcome,
    StudyResult,
    pull_source,
    targets_from_file,
    targets_from_query,
    targets_from_uids,
)

_DATE = re.compile(r"^\d{8}$")
_SHOWN_FAILURES = 20


class PullRequestError(ValueError):
    """The command line does not say what to pull."""


class _Bars:
    """Rich progress: one bar for studies, one for instances received."""

    def __init__(self, progress: Progress, total_studies: int | None) -> None:
        self.progress = progress
        self.failed = 0
        self.studies: TaskID = progress.add_task("studies", total=total_studies)
        self.instances: TaskID = progress.add_task("instances", total=None)

    def on_instances(self, count: int) -> None:
        self.progress.advance(self.instances, count)

    def on_study(self, outcome: StudyOutcome) -> None:
        if outcome.result is StudyResult.FAILED:
            self.failed += 1
            self.progress.update(self.studies, description=f"studies ({self.failed} failed)")
        self.progress.advance(self.studies)


def _check_date(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    compact = value.replace("-", "")
    if not _DATE.match(compact):
        msg = f"{option}: a date as YYYY-MM-DD or YYYYMMDD, got {value!r}"
        raise PullRequestError(msg)
    return compact


@dataclass(frozen=True)
class PullPlan:
    """What to pull from where: the source, the studies (lazily), how many if known, and the selection for the audit."""

    source: Peer
    targets: Iterator[PullTarget]
    total: int | None
    selection: dict[str, Any]


def choose_targets(
    settings: Settings,
    *,
    source_ae: str | None,
    study_uids: list[str],
    from_file: Path | None,
    date_from: str | None,
    date_to: str | None,
    modality: str | None,
) -> PullPlan:
    """What the command line asks to pull."""
    by_query = date_from is not None or date_to is not None or modality is not None
    if sum([bool(study_uids), from_file is not None, by_query]) != 1:
        msg = "give Study Instance UIDs, --from-file, or a query (--date-from/--date-to/--modality): exactly one of them"
        raise PullRequestError(msg)
    source = pull_source(settings, source_ae)
    if study_uids:
        return PullPlan(source, targets_from_uids(study_uids), len(study_uids), {"study_uids": len(study_uids)})
    if from_file is not None:
        if not from_file.is_file():
            msg = f"--from-file: no such file: {from_file}"
            raise PullRequestError(msg)
        return PullPlan(source, targets_from_file(from_file), None, {"from_file": str(from_file)})
    first, last = _check_date(date_from, "--date-from"), _check_date(date_to, "--date-to")
    targets = targets_from_query(settings, source, date_from=first, date_to=last, modality=modality)
    return PullPlan(source, targets, None, {"date_from": first, "date_to": last, "modality": modality})


def run_pull(
    settings: Settings,
    ledger: Ledger,
    console: Console,
    progress_console: Console,
    plan: PullPlan,
    *,
    concurrency: int,
) -> PullSummary:
    """Pull with progress bars on ``progress_console``; print the summary on ``console`` and return it."""
    columns = (TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=progress_console, transient=False) as progress:
        bars = _Bars(progress, plan.total)
        summary = Puller(settings, ledger, plan.source, concurrency=concurrency, observer=bars).run(plan.targets, plan.selection)
    table = Table(title=f"Pull from {plan.source.ae_title}")
    for col in ("pulled", "already present", "failed", "instances received"):
        table.add_column(col, justify="right")
    table.add_row(str(summary.pulled), str(summary.present), str(summary.failed), str(summary.instances))
    console.print(table)
    if summary.selection_error:
        console.print(f"[red]{summary.selection_error}[/red]", highlight=False)
    for study_uid, reason in list(summary.failures.items())[:_SHOWN_FAILURES]:
        console.print(f"[red]failed {study_uid}: {reason}[/red]", highlight=False)
    if summary.failed > _SHOWN_FAILURES:
        console.print(f"... and {summary.failed - _SHOWN_FAILURES} more (guard audit --event pull.completed)")
    return summary


__all__ = ["PullPlan", "PullRequestError", "choose_targets", "run_pull"]
