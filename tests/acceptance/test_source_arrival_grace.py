"""Storage Commitment toward the PACS with an instance the guard never received: reported after the arrival grace, not the deadline.

A real Orthanc is the archive and confirms what the guard forwards; the PACS side is a
pynetdicom listener that receives the guard's N-EVENT-REPORT on a new association. The
request names the study's instances and one the PACS never sent. Once the others are
confirmed and ``confirm.source_arrival_grace`` has passed since the request, the guard sends
its one report: the confirmed ones succeeded, the never-received one failed with 0x0112, long
before ``confirm.source_report_deadline``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from guard.domain import status as st
from tests.acceptance.conftest import GuardFactory
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE
from tests.support.orthanc import Orthanc
from tests.support.pacs import PacsListener, request_commitment
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop

CT = "1.2.840.10008.5.1.4.1.1.2"
NEVER_SENT = "1.2.3.999999.7"
DEADLINE = 600.0
GRACE = 3.0


class AcknowledgingPacs(PacsListener):
    """The PACS listener, answering each N-EVENT-REPORT with Success (pynetdicom wants a status and a data set)."""

    def _on_report(self, event: Any) -> tuple[int, None]:  # type: ignore[override]
        super()._on_report(event)
        return 0x0000, None


@pytest.fixture
def pacs() -> Iterator[PacsListener]:
    """The PACS's listener for the guard's reports; a report it acknowledged is not sent again."""
    listener = AcknowledgingPacs(ae_title=SOURCE_AE).start()
    yield listener
    listener.stop()


def test_never_received_instance_is_reported_0x0112_after_the_arrival_grace(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, pacs: PacsListener, synthetic_study: StudyFactory
) -> None:
    """All else confirmed: one report, success for the study, 0x0112 for the unknown instance, after the grace, not the deadline."""
    guard = guard_factory(
        archive_port=orthanc_archive.dicom_port,
        sources=[{"ae_title": SOURCE_AE, "host": "127.0.0.1", "port": pacs.port}],
        confirm={"source_report_deadline": DEADLINE, "source_arrival_grace": GRACE},
    )
    orthanc_archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    guard.start()
    study = synthetic_study(2)
    assert store_responses(storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)) == ["Success"] * 2
    asked = time.monotonic()
    transaction_uid, status = request_commitment(guard.port, [*((CT, uid) for uid in study.sop_instance_uids), (CT, NEVER_SENT)])
    assert status == st.SUCCESS
    report = wait_until(lambda: pacs.report_for(transaction_uid), 90, message="no report before the deadline")
    assert time.monotonic() - asked >= GRACE
    assert report.event_type == 2
    assert sorted(report.successes) == sorted(study.sop_instance_uids)
    assert report.failures == {NEVER_SENT: 0x0112}

    def inbound_reports() -> list[dict[str, object]]:
        return [r for r in guard.audit_records("commitment.reported") if r["detail"]["transaction_uid"] == transaction_uid]

    (audited,) = wait_until(inbound_reports, 10, message="the report was not audited")
    assert audited["detail"]["failed"] == [{"sop_instance_uid": NEVER_SENT, "reason": "0x0112"}]
    with pacs.lock:
        assert [r.transaction_uid for r in pacs.reports].count(transaction_uid) == 1
