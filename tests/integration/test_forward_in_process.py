"""Forwarding in the test process: the workers' ArchiveSender against the reference archive, faults switched on and off."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from guard.ledger.audit_query import query_audit
from guard.ledger.instances import study_facts
from tests.integration.inprocess import GUARD_AE, SOURCE_AE, running_guard
from tests.support.datasets import make_study
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from guard.app.service import GuardService
    from tests.support.datasets import Study


def _send(service: GuardService, study: Study) -> None:
    ae = AE(ae_title=SOURCE_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 10
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", service.settings.node.port, ae_title=GUARD_AE)
    assert assoc.is_established
    try:
        assert [int(assoc.send_c_store(dcmread(p)).Status) for p in study.paths] == [0x0000] * len(study.paths)
    finally:
        assoc.release()


def _states(service: GuardService, study: Study) -> set[str]:
    assert service.ledger is not None
    return set(study_facts(service.ledger, study.study_uid).values())


def test_an_archive_out_of_resources_is_retried_until_it_takes_the_study(tmp_path: Path) -> None:
    """0xA700 from the archive leaves the instances failed (retrying with backoff); once it recovers, all are confirmed."""
    study = make_study(tmp_path / "study", 3)
    with running_guard(tmp_path) as (service, archive):
        archive.faults.status = 0xA700
        _send(service, study)
        wait_until(lambda: _states(service, study) == {"failed"}, 20, message="instances not failed while the archive refuses")
        assert archive.held_uids() == set()
        archive.faults.clear()
        wait_until(lambda: _states(service, study) == {"confirmed"}, 30, message="instances not confirmed after recovery")
        assert archive.held_uids() == set(study.sop_instance_uids)


def test_an_archive_that_cannot_understand_dead_letters_at_once(tmp_path: Path) -> None:
    """0xC000 from the archive is permanent: the instances are dead-lettered on the first attempt, and kept in the spool."""
    study = make_study(tmp_path / "study", 2)
    with running_guard(tmp_path) as (service, archive):
        archive.faults.status = 0xC000
        _send(service, study)
        wait_until(lambda: _states(service, study) == {"dead-lettered"}, 20, message="instances not dead-lettered")
        assert archive.received_count == 0
        assert len(list(service.spool.root.rglob("*.dcm"))) >= 2


def test_a_spool_file_that_is_gone_is_dead_lettered_at_once(tmp_path: Path) -> None:
    """A spooled file removed behind the guard's back: the next attempt dead-letters it as permanent (spool file missing); nothing sent."""
    study = make_study(tmp_path / "study", 2)
    with running_guard(tmp_path) as (service, archive):
        archive.faults.refuse = True  # hold the instances back (refused associations use up no attempt)
        _send(service, study)
        wait_until(lambda: _states(service, study) == {"failed"}, 20, message="instances not failed while the archive refuses")
        for path in service.spool.root.rglob("*.dcm"):
            path.unlink()
        wait_until(lambda: _states(service, study) == {"dead-lettered"}, 30, message="instances with no spool file not dead-lettered")
        assert service.ledger is not None
        dead = query_audit(service.ledger, event="instance.dead_lettered")
        assert len(dead) == 2
        assert all(r.detail["reason"].startswith("permanent failure: spool file missing") for r in dead)
        assert archive.received_count == 0


def test_full_commitment_requests_go_at_once_and_the_rest_waits_for_the_study_to_be_quiet(tmp_path: Path) -> None:
    """Ten instances, requests of at most four: the two full requests go as soon as they are forwarded, the last two wait.

    The loop looks at the ledger only every minute and a study is due after two quiet minutes:
    only the wake-up for a request that forwarding filled can confirm the eight in time.
    """
    study = make_study(tmp_path / "study", 10)
    quick = {"max_references": 4, "batch_wait": 120, "poll_interval": 60}
    with running_guard(tmp_path, archive={"confirm": "commitment"}, confirm=quick) as (service, _archive):
        _send(service, study)
        assert service.ledger is not None
        ledger = service.ledger
        wait_until(
            lambda: Counter(study_facts(ledger, study.study_uid).values()) == {"confirmed": 8, "forwarded": 2},
            30,
            message="the full requests were not confirmed at once, or the partial one did not wait",
        )
