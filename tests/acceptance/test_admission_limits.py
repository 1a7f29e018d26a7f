"""Admission per source and limits per peer, through a real ``guard serve`` with DCMTK and the reference archive."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from guard.domain import status as st
from guard.sandbox.archive import ReferenceArchive
from tests.acceptance.conftest import GuardFactory
from tests.hostile.peer import RawPeer
from tests.support.certs import TestCA
from tests.support.datasets import make_rejection_note
from tests.support.dcmtk import final_response, findscu, movescu, store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.ports import free_port
from tests.support.processes import PeerError
from tests.support.scu import send_files
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop


def test_source_outside_its_address_range_is_refused(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """A source allowed only from 10.1.0.0/16 calling from 127.0.0.1 gets A-ASSOCIATE-RJ, audited address-not-allowed."""
    guard = guard_factory(
        archive_port=ref_archive.port, sources=[{"ae_title": SOURCE_AE, "allowed_addresses": ["10.1.0.0/16"], "port": 104}]
    ).start()
    result = storescu("127.0.0.1", guard.port, synthetic_study(1).paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stdout + result.stderr
    assert [r["detail"]["reason"] for r in guard.audit_records("association.rejected")] == ["address-not-allowed"]
    assert guard.instance_states() == {}


def test_source_without_kos_gets_its_rejection_note_refused(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, tmp_path: Path
) -> None:
    """A source allowed store but not kos stores images, but its IOCM rejection note is refused with 0x0124 and audited."""
    guard = guard_factory(
        archive_port=ref_archive.port,
        sources=[{"ae_title": SOURCE_AE, "allowed_addresses": ["127.0.0.0/8"], "services": ["store"], "port": 104}],
    ).start()
    study = synthetic_study(2)
    assert [s for _, s in send_files(guard.port, study.paths)] == [st.SUCCESS] * 2
    note = make_rejection_note(tmp_path / "note.dcm", study)
    assert [s for _, s in send_files(guard.port, [note])] == [st.REFUSED_NOT_AUTHORIZED]
    alerts = [r["detail"] for r in guard.audit_records("security.alert") if r["detail"].get("reason") == "service-not-allowed"]
    assert len(alerts) == 1
    assert "kos" in alerts[0]["message"]
    assert set(guard.instance_states()) == set(study.sop_instance_uids)
    assert guard.audit_records("delete.requested") == []


def test_source_without_find_cannot_query(guard_factory: GuardFactory, ref_archive: ReferenceArchive) -> None:
    """C-FIND from a source without the find service fails at negotiation (context rejected), audited."""
    guard = guard_factory(archive_port=ref_archive.port, sources=[{"ae_title": SOURCE_AE, "services": ["store"], "port": 104}]).start()
    with pytest.raises(PeerError):
        findscu("127.0.0.1", guard.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE, level="STUDY", keys={"StudyInstanceUID": ""})
    alerts = [r["detail"] for r in guard.audit_records("security.alert") if r["detail"].get("reason") == "service-not-allowed"]
    assert alerts
    assert alerts[0]["abstract_syntaxes"] == ["1.2.840.10008.5.1.4.1.2.2.1"]


def test_source_without_move_cannot_retrieve(guard_factory: GuardFactory, ref_archive: ReferenceArchive) -> None:
    """C-MOVE from a source allowed only store and find gets no association for it; audited."""
    guard = guard_factory(
        archive_port=ref_archive.port, sources=[{"ae_title": SOURCE_AE, "services": ["store", "find"], "port": 104}]
    ).start()
    result = movescu(
        "127.0.0.1",
        guard.port,
        calling_ae=SOURCE_AE,
        called_ae=GUARD_AE,
        move_destination=SOURCE_AE,
        level="STUDY",
        keys={"StudyInstanceUID": "1.2.3"},
        timeout=30,
    )
    assert final_response(result) is None
    alerts = [r["detail"] for r in guard.audit_records("security.alert") if r["detail"].get("reason") == "service-not-allowed"]
    assert alerts
    assert alerts[0]["abstract_syntaxes"] == ["1.2.840.10008.5.1.4.1.2.2.2"]


def test_connection_flood_from_one_peer_does_not_stop_another_peers_study(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """200 connection attempts from 127.0.0.2 while storescu sends a study from 127.0.0.1: every instance confirmed."""
    guard = guard_factory(archive_port=ref_archive.port, node={"acse_timeout": 3}).start()
    ref_archive.add_requester(GUARD_AE, "127.0.0.1", guard.port)
    study = synthetic_study(20)
    stop = threading.Event()
    halfway = threading.Event()
    attempts = [0]

    def flood() -> None:
        # Connections are held open until the study is through, so the flood overlaps it.
        peers = []
        while attempts[0] < 200:
            with contextlib.suppress(OSError):
                peers.append(RawPeer(guard.port, source="127.0.0.2", timeout=2))
            attempts[0] += 1
            if attempts[0] == 100:
                halfway.set()
        stop.wait(120)
        for peer in peers:
            peer.close()

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        assert halfway.wait(30)
        result = storescu("127.0.0.1", guard.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    finally:
        stop.set()
        flooder.join(60)
    assert attempts[0] == 200
    assert store_responses(result) == ["Success"] * 20
    wait_until(
        lambda: set(guard.instance_states().values()) == {"confirmed"} and len(guard.instance_states()) == 20,
        60,
        message="study not confirmed",
    )
    refused = [r["detail"] for r in guard.audit_records("association.rejected") if r["peer_address"] == "127.0.0.2"]
    assert any(d["reason"] == "too-many-pending-connections-from-address" for d in refused)


def test_peer_that_sends_nothing_is_dropped(guard_factory: GuardFactory, ref_archive: ReferenceArchive) -> None:
    """A connection that sends no A-ASSOCIATE-RQ is closed after acse_timeout; audited."""
    guard = guard_factory(archive_port=ref_archive.port, node={"acse_timeout": 2}).start()
    peer = RawPeer(guard.port)
    assert 1.5 <= peer.closed_within(15) <= 10
    wait_until(
        lambda: any(r["detail"]["reason"] == "no-association-request" for r in guard.audit_records("association.rejected")),
        10,
        message="not audited",
    )


def _tls_refusals(guard: GuardProcess) -> int:
    return sum(1 for r in guard.audit_records("security.alert") if r["detail"].get("alert") == "tls-handshake-refused")


def test_failed_tls_handshakes_do_not_use_up_the_tls_listener(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory, tmp_path: Path
) -> None:
    """Ten connections that fail their TLS handshake, with 2 pending allowed per address, leave the TLS port open to a good client."""
    ca = TestCA(tmp_path / "ca")
    guard_files, client = ca.issue("guard"), ca.issue("storescu")
    tls = {"port": free_port(), "certificate": str(guard_files.certificate), "private_key": str(guard_files.private_key)}
    guard = guard_factory(
        archive_port=ref_archive.port,
        node={"max_pending_per_address": 2},
        tls={**tls, "ca_file": str(ca.ca_file)},
        sources=[{"ae_title": SOURCE_AE, "host": "127.0.0.1", "port": free_port(), "tls": True}],
    ).start()
    for count in range(1, 11):
        peer = RawPeer(guard.config["tls"]["port"])
        peer.send(b"this is not a TLS client hello\r\n" * 4)
        peer.closed_within(15)
        # Audited before the guard closes the connection (guard.listener.tls_server).
        assert _tls_refusals(guard) == count, f"handshake failure {count} not audited when its connection closed:\n{guard.log_tail()}"
    assert _tls_refusals(guard) == 10
    extra = ["+tls", str(client.private_key), str(client.certificate), "+cf", str(ca.ca_file)]
    result = storescu(
        "127.0.0.1", tls["port"], synthetic_study(1).paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE, timeout=30, extra_args=extra
    )
    assert store_responses(result) == ["Success"], result.stdout + result.stderr


def test_associations_beyond_the_per_address_cap_are_rejected_transient(guard_factory: GuardFactory, ref_archive: ReferenceArchive) -> None:
    """With 2 associations per address, a third from the same address gets A-ASSOCIATE-RJ transient, local-limit-exceeded; audited."""
    guard = guard_factory(archive_port=ref_archive.port, node={"max_associations_per_address": 2}).start()
    contexts = [("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])]
    held = [RawPeer(guard.port) for _ in range(2)]
    assert [peer.associate(SOURCE_AE, GUARD_AE, contexts).pdu_type for peer in held] == [0x02, 0x02]
    third = RawPeer(guard.port)
    answer = third.associate(SOURCE_AE, GUARD_AE, contexts)
    assert answer.pdu_type == 0x03
    assert tuple(answer.body[1:4]) == (0x02, 0x03, 0x02)  # result transient, source provider (presentation), local limit
    held[0].close()

    def admitted_again() -> bool:
        peer = RawPeer(guard.port)
        try:
            return peer.associate(SOURCE_AE, GUARD_AE, contexts).pdu_type == 0x02
        finally:
            peer.close()

    wait_until(admitted_again, 15, message="place not freed")
    refused = [r["detail"]["reason"] for r in guard.audit_records("association.rejected")]
    assert "too-many-associations-from-address" in refused
    for peer in [*held, third]:
        peer.close()
