"""The outbound DICOM seam in the test process: C-STORE, C-FIND, N-ACTION, N-EVENT-REPORT and C-ECHO against real peers.

Each pynetdicom outcome arrives as a guard error whose type says what to do: retry
(``TransientPeerError``), give up (``PermanentPeerError``), or wait for the peer
(``ArchiveUnreachableError``), with the status the peer answered.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from guard import runtime
from guard.config.settings import ArchiveSettings
from guard.dicom.commitment import deliver_report, find_study_instances, request_commitment
from guard.dicom.net import Peer
from guard.dicom.probe import echo
from guard.dicom.store import ArchiveSender
from guard.domain.errors import ArchiveUnreachableError, PermanentPeerError, TransientPeerError
from guard.sandbox.archive import ReferenceArchive
from tests.support.datasets import make_study
from tests.support.ports import free_port
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.datasets import Study

CT = "1.2.840.10008.5.1.4.1.1.2"
#: The transfer syntax ``make_study`` writes its files in: the guard sends the spool file as it is.
EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.fixture(autouse=True)
def _runtime_as_in_production(tmp_path: Path) -> None:
    """Pynetdicom set up as ``guard serve`` sets it (data sets sent from their files as they are), whatever ran before."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    runtime.configure_dicom(incoming)


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[ReferenceArchive]:
    """The reference archive on a free loopback port, in this process."""
    started = ReferenceArchive(tmp_path / "archive").start()
    yield started
    started.stop()


def _peer(archive: ReferenceArchive) -> Peer:
    return Peer(archive.ae_title, "127.0.0.1", archive.port)


def _sender(archive: ReferenceArchive) -> ArchiveSender:
    return ArchiveSender("GUARD", ArchiveSettings(ae_title=archive.ae_title, host="127.0.0.1", port=archive.port), timeout=5, max_pdu=0)


def _stored(archive: ReferenceArchive, tmp_path: Path, count: int) -> Study:
    study = make_study(tmp_path / "study", count)
    with _sender(archive) as sender:
        for path in study.paths:
            sender.send(path, CT, EXPLICIT)
    return study


def test_store_reuses_one_association_and_the_archive_holds_every_instance(archive: ReferenceArchive, tmp_path: Path) -> None:
    """Three C-STOREs of one SOP class and syntax go over one association; each is answered Success and kept."""
    study = make_study(tmp_path / "study", 3)
    with _sender(archive) as sender:
        statuses = [sender.send(study.paths[0], CT, EXPLICIT)]
        first = sender.assoc
        statuses += [sender.send(path, CT, EXPLICIT) for path in study.paths[1:]]
        assert sender.assoc is first
    assert statuses == [0x0000] * 3
    assert archive.held_uids() == set(study.sop_instance_uids)


@pytest.mark.parametrize(
    ("status", "error"),
    [(0xA700, TransientPeerError), (0x0110, TransientPeerError), (0xA900, PermanentPeerError), (0xC000, PermanentPeerError)],
)
def test_a_store_failure_status_is_transient_or_permanent_by_the_status(
    archive: ReferenceArchive, tmp_path: Path, status: int, error: type[Exception]
) -> None:
    """0xA7xx and 0x0110 are worth retrying; 0xA9xx and 0xCxxx are not; the error keeps the status."""
    study = make_study(tmp_path / "study", 1)
    archive.faults.status = status
    with _sender(archive) as sender, pytest.raises(error) as raised:
        sender.send(study.paths[0], CT, EXPLICIT)
    assert type(raised.value) is error
    assert getattr(raised.value, "status", None) == status


def test_a_refused_or_aborted_store_is_unreachable_or_transient(archive: ReferenceArchive, tmp_path: Path) -> None:
    """A refused association says nothing about the instance (unreachable); an abort mid-store is a transient failure."""
    study = make_study(tmp_path / "study", 1)
    archive.faults.refuse = True
    with _sender(archive) as sender, pytest.raises(ArchiveUnreachableError):
        sender.send(study.paths[0], CT, EXPLICIT)
    archive.faults.clear()
    archive.faults.abort = True
    with _sender(archive) as sender, pytest.raises(TransientPeerError) as raised:
        sender.send(study.paths[0], CT, EXPLICIT)
    assert raised.value.status is None
    assert sender.assoc is None


def test_find_lists_what_the_archive_holds_and_its_failures_are_typed(archive: ReferenceArchive, tmp_path: Path) -> None:
    """IMAGE-level C-FIND returns the study's SOP Instance UIDs; 0xA700 is transient, 0xC000 permanent; no answer is transient."""
    study = _stored(archive, tmp_path, 4)
    assert find_study_instances("GUARD", _peer(archive), study.study_uid, timeout=5) == set(study.sop_instance_uids)
    assert find_study_instances("GUARD", _peer(archive), "1.2.3.999", timeout=5) == set()
    for status, error in ((0xA700, TransientPeerError), (0xC000, PermanentPeerError)):
        archive.faults.find_status = status
        with pytest.raises(error) as raised:
            find_study_instances("GUARD", _peer(archive), study.study_uid, timeout=5)
        assert (type(raised.value), raised.value.status) == (error, status)
    archive.faults.clear()
    archive.faults.abort = True
    with pytest.raises(TransientPeerError):
        find_study_instances("GUARD", _peer(archive), study.study_uid, timeout=5)


def _report_receiver(answer: int) -> tuple[Any, list[str]]:
    """A pynetdicom AE that takes Storage Commitment reports (the guard or a PACS in the SCU role) and answers ``answer``."""
    received: list[str] = []

    def on_report(event: Any) -> tuple[int, None]:
        received.append(str(event.event_information.TransactionUID))
        return answer, None

    ae = AE(ae_title="GUARD")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = ae.start_server(("127.0.0.1", free_port()), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    return server, received


def test_commitment_is_requested_and_reported_on_a_new_association(archive: ReferenceArchive, tmp_path: Path) -> None:
    """The N-ACTION is answered Success; the archive's report reaches the requester's listener and names the transaction."""
    study = _stored(archive, tmp_path, 2)
    server, received = _report_receiver(0x0000)
    try:
        archive.add_requester("GUARD", "127.0.0.1", int(server.server_address[1]))
        references = [(CT, uid) for uid in study.sop_instance_uids]
        request_commitment("GUARD", _peer(archive), transaction_uid="1.2.3.4.77", references=references, timeout=5)
        wait_until(lambda: archive.reports_sent, 10, message="the archive recorded no report")
    finally:
        server.shutdown()
    assert received == ["1.2.3.4.77"]
    assert [(r.transaction_uid, set(r.succeeded), r.status) for r in archive.reports_sent] == [
        ("1.2.3.4.77", set(study.sop_instance_uids), 0x0000)
    ]


def test_a_refused_commitment_request_is_a_peer_error_with_the_status(archive: ReferenceArchive) -> None:
    """An N-ACTION answered 0x0110 is transient, 0x0119 permanent; an archive that aborts (unknown requester) is transient."""
    archive.add_requester("GUARD", "127.0.0.1", 1)
    for status, error in ((0x0110, TransientPeerError), (0x0119, PermanentPeerError)):
        archive.faults.commit_status = status
        with pytest.raises(error) as raised:
            request_commitment("GUARD", _peer(archive), transaction_uid="1.2.3.4.78", references=[(CT, "1.2.3.4.78.1")], timeout=5)
        assert (type(raised.value), raised.value.status) == (error, status)
    archive.faults.clear()
    with pytest.raises(TransientPeerError):
        request_commitment("OTHER", _peer(archive), transaction_uid="1.2.3.4.79", references=[(CT, "1.2.3.4.79.1")], timeout=5)


def test_a_report_to_a_source_is_delivered_or_its_refusal_is_transient() -> None:
    """``deliver_report`` gets Success from a willing source; a source answering 0x0110 is a transient failure; no source is unreachable."""
    for answer in (0x0000, 0x0110):
        server, received = _report_receiver(answer)
        peer = Peer("GUARD", "127.0.0.1", int(server.server_address[1]))
        try:
            if answer == 0x0000:
                deliver_report("ARCHIVE", peer, transaction_uid="1.2.3.5", successes=[(CT, "1.2.3.5.1")], failures=[], timeout=5)
            else:
                with pytest.raises(TransientPeerError) as raised:
                    deliver_report(
                        "ARCHIVE", peer, transaction_uid="1.2.3.6", successes=[], failures=[(CT, "1.2.3.6.1", 0x0112)], timeout=5
                    )
                assert raised.value.status == answer
        finally:
            server.shutdown()
        assert len(received) == 1
    with pytest.raises(ArchiveUnreachableError):
        deliver_report("ARCHIVE", Peer("GUARD", "127.0.0.1", free_port()), transaction_uid="1.2.3.7", successes=[], failures=[], timeout=2)


def test_echo_says_reachable_only_when_the_archive_answers(archive: ReferenceArchive) -> None:
    """A C-ECHO to a running archive is reachable with a latency; to a stopped one, unreachable with the reason."""
    up = echo("GUARD", _peer(archive), 5)
    assert (up.reachable, up.error) == (True, None)
    assert up.latency_ms is not None
    archive.stop()
    down = echo("GUARD", _peer(archive), 2)
    assert down.reachable is False
    assert down.error is not None
    assert "association to ARCHIVE" in down.error
