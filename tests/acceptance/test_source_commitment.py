"""Storage Commitment asked of the guard by the PACS: reported truthfully, never success without the archive's proof."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from guard.domain import status as st
from tests.acceptance.conftest import GuardFactory
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.pacs import PacsListener, ReceivedReport, request_commitment
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop

CT = "1.2.840.10008.5.1.4.1.1.2"
NEVER_SENT = "1.2.3.999999.1"


@pytest.fixture
def pacs() -> Iterator[PacsListener]:
    """The PACS's listener for the guard's reports."""
    listener = PacsListener(ae_title=SOURCE_AE).start()
    yield listener
    listener.stop()


def _guard(guard_factory: GuardFactory, archive_port: int, pacs: PacsListener, deadline: float) -> GuardProcess:
    return guard_factory(
        archive_port=archive_port,
        sources=[{"ae_title": SOURCE_AE, "host": "127.0.0.1", "port": pacs.port}],
        confirm={"source_report_deadline": deadline},
    )


def _report(pacs: PacsListener, transaction_uid: str, timeout: float = 60) -> ReceivedReport:
    return wait_until(lambda: pacs.report_for(transaction_uid), timeout, message="no report reached the PACS")


def test_pacs_gets_success_for_confirmed_and_0x0112_for_never_received(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, pacs: PacsListener, synthetic_study: StudyFactory
) -> None:
    """The report arrives on a new association to the PACS: the never-sent instance failed 0x0112, the rest succeeded once confirmed."""
    guard = _guard(guard_factory, orthanc_archive.dicom_port, pacs, deadline=6)
    orthanc_archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    guard.start()
    study = synthetic_study(3)
    assert store_responses(storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)) == ["Success"] * 3
    refs = [(CT, uid) for uid in study.sop_instance_uids]
    complete_uid, status = request_commitment(guard.port, refs)
    assert status == st.SUCCESS
    mixed_uid, status = request_commitment(guard.port, [*refs, (CT, NEVER_SENT)])
    assert status == st.SUCCESS
    complete = _report(pacs, complete_uid)
    assert (complete.event_type, sorted(complete.successes), complete.failures) == (1, sorted(study.sop_instance_uids), {})
    assert complete.calling_ae == GUARD_AE
    mixed = _report(pacs, mixed_uid)
    assert mixed.event_type == 2
    assert sorted(mixed.successes) == sorted(study.sop_instance_uids)
    assert mixed.failures == {NEVER_SENT: 0x0112}

    def reported() -> set[str]:
        return {r["detail"]["transaction_uid"] for r in guard.audit_records("commitment.reported") if r["detail"]["direction"] == "inbound"}

    # The guard records a report once it has been delivered: the PACS may see it a moment before the ledger does.
    wait_until(lambda: reported() == {complete_uid, mixed_uid}, 10, message="inbound commitment reports not audited")
    # The PACS acknowledged each report: it is sent once, not again and again.
    with pacs.lock:
        sent = sorted(r.transaction_uid for r in pacs.reports)
    assert sorted([complete_uid, mixed_uid]) == sent


def test_archive_down_the_deadline_reports_0x0110_never_success(
    guard_factory: GuardFactory, pacs: PacsListener, synthetic_study: StudyFactory
) -> None:
    """With no archive, the deadline passes and every instance is reported failed 0x0110 (processing failure)."""
    guard = _guard(guard_factory, free_port(), pacs, deadline=3).start()
    study = synthetic_study(2)
    storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    transaction_uid, status = request_commitment(guard.port, [(CT, uid) for uid in study.sop_instance_uids])
    assert status == st.SUCCESS
    report = _report(pacs, transaction_uid)
    assert report.successes == []
    assert report.failures == dict.fromkeys(study.sop_instance_uids, 0x0110)


def test_request_survives_a_restart_of_the_guard(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, pacs: PacsListener, synthetic_study: StudyFactory
) -> None:
    """A request accepted before a SIGKILL is answered after the restart, with success once the archive confirms."""
    guard = _guard(guard_factory, orthanc_archive.dicom_port, pacs, deadline=120).start()  # Orthanc does not know the guard yet
    study = synthetic_study(2)
    storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    transaction_uid, status = request_commitment(guard.port, [(CT, uid) for uid in study.sop_instance_uids])
    assert status == st.SUCCESS
    guard.kill()
    assert pacs.report_for(transaction_uid) is None
    orthanc_archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    guard.start()
    report = _report(pacs, transaction_uid)
    assert (report.event_type, sorted(report.successes), report.failures) == (1, sorted(study.sop_instance_uids), {})


def test_commitment_request_from_an_unknown_ae_is_rejected(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, pacs: PacsListener
) -> None:
    """An AE that is not a source cannot even associate to ask for commitment; it is audited."""
    guard = _guard(guard_factory, orthanc_archive.dicom_port, pacs, deadline=5).start()
    _, status = request_commitment(guard.port, [(CT, NEVER_SENT)], calling_ae="STRANGER")
    assert status is None
    assert [r["actor"] for r in guard.audit_records("association.rejected")] == ["STRANGER"]
