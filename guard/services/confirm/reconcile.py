"""``guard reconcile``: walk studies, ask the archive what it holds, and put right what it lacks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from guard.config.settings import Settings
from guard.domain.errors import PeerError
from guard.domain.states import AuditEvent, Outcome
from guard.ledger.ledger import Ledger
from guard.ledger.reconcile import reconcile_study
from guard.services.archive import open_archive
from guard.spool import Spool


@dataclass
class ReconcileSummary:
    """Totals of a reconcile run."""

    studies: int = 0
    instances: int = 0
    requeued: int = 0
    lost: int = 0
    errors: dict[str, str] = field(default_factory=dict)


def reconcile(
    settings: Settings,
    ledger: Ledger,
    spool: Spool,
    study_uids: Iterable[str],
    *,
    actor: str = "cli",
    on_study: Callable[[str], None] | None = None,
) -> ReconcileSummary:
    """Reconcile each study with the archive (C-FIND or QIDO-RS); audit the run as ``reconcile.completed``."""
    archive = open_archive(settings)
    summary = ReconcileSummary()
    for study_uid in study_uids:
        summary.studies += 1
        try:
            held = archive.study_instances(study_uid)
        except PeerError as exc:
            summary.errors[study_uid] = str(exc)
        else:
            result = reconcile_study(
                ledger, study_uid, held, lambda p: spool.path_of(p).is_file(), max_resends=settings.confirm.max_resends
            )
            summary.instances += result.checked
            summary.requeued += len(result.requeued)
            summary.lost += len(result.lost)
        if on_study is not None:
            on_study(study_uid)
    outcome = Outcome.SUCCESS if not summary.errors and not summary.lost else Outcome.FAILURE
    ledger.audit(
        AuditEvent.RECONCILE_COMPLETED,
        outcome,
        actor=actor,
        detail={
            "studies": summary.studies,
            "instances": summary.instances,
            "requeued": summary.requeued,
            "lost": summary.lost,
            "errors": len(summary.errors),
            "first_errors": dict(list(summary.errors.items())[:10]),
        },
    )
    return summary
