"""The listener's handlers in the test process, against real pynetdicom peers and a raw socket on loopback."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from pydicom import Dataset, dcmread
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from guard.ledger.instances import study_facts
from tests.hostile.peer import IMPLICIT_LE, VERIFICATION, RawPeer, element, p_data
from tests.integration.inprocess import ARCHIVE_AE, GUARD_AE, SOURCE_AE, alerts, running_guard, settings_for
from tests.support.datasets import make_study
from tests.support.ports import free_port
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from guard.app.service import GuardService

A_ASSOCIATE_AC, A_ABORT = 0x02, 0x07


def _scu(*contexts: str) -> AE:
    ae = AE(ae_title=SOURCE_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 10
    for context in contexts:
        ae.add_requested_context(context)
    return ae


def _echo(service: GuardService) -> int | None:
    assoc = _scu(Verification).associate("127.0.0.1", service.settings.node.port, ae_title=GUARD_AE)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    return int(status.Status) if status is not None and "Status" in status else None


def _store(service: GuardService, paths: list[Path]) -> list[Dataset]:
    assoc = _scu(CTImageStorage).associate("127.0.0.1", service.settings.node.port, ae_title=GUARD_AE)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(dcmread(path)) for path in paths]
    finally:
        assoc.release()


def test_a_stored_study_is_forwarded_and_confirmed_and_found_through_the_relay(tmp_path: Path) -> None:
    """C-STORE Success, then forwarding, Storage Commitment and C-FIND confirm it; a relayed C-FIND lists it."""
    study = make_study(tmp_path / "study", 3)
    with running_guard(tmp_path) as (service, archive):
        answers = _store(service, study.paths)
        assert [int(a.Status) for a in answers] == [0x0000] * 3
        assert service.ledger is not None
        ledger = service.ledger
        wait_until(lambda: set(study_facts(ledger, study.study_uid).values()) == {"confirmed"}, 30, message="study not confirmed")
        assert archive.held_uids() >= set(study.sop_instance_uids)
        # The archive records its report once the guard answered it, which may be after the ledger changed.
        [report] = wait_until(lambda: list(archive.reports_sent), 10, message="the archive recorded no report")
        assert (set(report.succeeded), report.status) == (set(study.sop_instance_uids), 0x0000)
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study.study_uid
        query.SOPInstanceUID = ""
        assoc = _scu(StudyRootQueryRetrieveInformationModelFind).associate("127.0.0.1", service.settings.node.port, ae_title=GUARD_AE)
        try:
            found = [
                (int(status.Status), identifier)
                for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
            ]
        finally:
            assoc.release()
        assert sorted(str(i.SOPInstanceUID) for code, i in found if code == 0xFF00) == sorted(study.sop_instance_uids)
        assert found[-1][0] == 0x0000
        assert archive.ae_title == ARCHIVE_AE


def test_an_unexpected_error_in_the_store_handler_is_a700_with_one_audit_record(tmp_path: Path) -> None:
    """A C-STORE whose handling raises what nobody expected: 0xA700 each time, one throttled security.alert, no file left."""
    study = make_study(tmp_path / "study", 2)
    with running_guard(tmp_path) as (service, _archive):
        assert service.server is not None

        def broken(_request: Any) -> Any:
            msg = "a bug in the ingest path"
            raise RuntimeError(msg)

        service.server.ingest.store = broken  # type: ignore[method-assign]
        answers = _store(service, study.paths)
        assert [(int(a.Status), str(a.get("ErrorComment", ""))) for a in answers] == [(0xA700, "internal error: RuntimeError")] * 2
        [alert] = wait_until(lambda: alerts(service, "handler-failed"), 10, message="no handler-failed alert")
        assert (alert["service"], alert["cause"], alert["status"], alert["calling_ae"]) == (
            "c-store",
            "c-store:RuntimeError",
            "0xA700",
            SOURCE_AE,
        )
        assert "a bug in the ingest path" in alert["error"]
        assert list(service.spool.incoming.iterdir()) == []
        assert _echo(service) == 0x0000


def _command_without_command_field() -> bytes:
    """A C-ECHO-RQ command set with its Command Field (0000,0100) left out (PS3.7 9.3.5.1 requires it)."""
    body = element(0, 0x0002, VERIFICATION.encode() + b"\0")
    body += element(0, 0x0110, struct.pack("<H", 1))
    body += element(0, 0x0800, struct.pack("<H", 0x0101))
    return element(0, 0x0000, struct.pack("<L", len(body))) + body


def test_a_command_set_without_command_field_is_aborted_and_audited(tmp_path: Path) -> None:
    """The association of a command set pynetdicom cannot decode is aborted, a security.alert says why, the listener serves on."""
    with running_guard(tmp_path) as (service, _archive):
        peer = RawPeer(service.settings.node.port)
        try:
            assert peer.associate(SOURCE_AE, GUARD_AE, [(VERIFICATION, [IMPLICIT_LE])]).pdu_type == A_ASSOCIATE_AC
            assert peer.send(p_data(1, 0x03, _command_without_command_field()))
            assert peer.receive(timeout=10).pdu_type in {A_ABORT, None}
        finally:
            peer.close()
        [alert] = wait_until(lambda: alerts(service, "dimse-undecodable"), 10, message="no dimse-undecodable alert")
        assert alert["service"] == "dimse-decode"
        assert alert["cause"] == "dimse-decode:AttributeError"
        assert "CommandField" in alert["error"]
        assert _echo(service) == 0x0000


def test_every_association_shares_the_supported_contexts_computed_once(tmp_path: Path) -> None:
    """An inbound association negotiates against the listener's own supported contexts, not a per-association deep copy."""
    with running_guard(tmp_path) as (service, _archive):
        assert service.server is not None
        assert service.server.server is not None
        listener = service.server.server
        own = {id(cx) for cx in service.server.ae.supported_contexts}
        assoc = _scu(Verification).associate("127.0.0.1", service.settings.node.port, ae_title=GUARD_AE)
        try:
            assert assoc.is_established
            [inbound] = wait_until(lambda: [a for a in listener.active_associations if a.is_established], 10, message="no association")
            used = inbound.acceptor.supported_contexts
            assert len(used) > 100
            assert {id(cx) for cx in used} <= own
        finally:
            assoc.release()


def test_an_association_that_sends_many_instances_holds_none_it_handed_over(tmp_path: Path) -> None:
    """Each instance's incoming file is forgotten once it is in the spool: what the process holds stays flat on one long association.

    The archive is unreachable (nothing is forwarded, so no other receiver in this process
    registers files). Before, every file stayed registered until the association ended or a
    spool sweep ran, which in a listener process never came: memory grew with the instances sent.
    """
    from guard import runtime  # noqa: PLC0415 - the process-wide registry this test reads
    from guard.app.service import GuardService  # noqa: PLC0415 - a guard in this process, without the reference archive

    study = make_study(tmp_path / "study", 20, rows=16, columns=16)
    service = GuardService(settings_for(tmp_path, free_port()))
    service.start()
    try:
        before = runtime.held_incoming()
        assoc = _scu(CTImageStorage).associate("127.0.0.1", service.settings.node.port, ae_title=GUARD_AE)
        assert assoc.is_established
        held = []
        try:
            for path in study.paths:
                assert int(assoc.send_c_store(dcmread(path)).Status) == 0x0000
                held.append(runtime.held_incoming() - before)
        finally:
            assoc.release()
    finally:
        service.stop()
    assert held == [0] * len(study.paths)
