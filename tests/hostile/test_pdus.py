"""Hostile PDUs from a raw socket: each ends in a refused, rejected or aborted association, audited; never a hang.

Every test uses the ``contained`` fixture: afterwards the guard answers C-ECHO and nothing
outside the case changed.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from tests.hostile.conftest import HOSTILE_NODE, audits_since
from tests.hostile.peer import (
    CT_STORAGE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    VERIFICATION,
    RawPeer,
    associate_rq,
    command,
    p_data,
    pdu,
)
from tests.support.dcmtk import echoscu
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop

A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ABORT = 0x02, 0x03, 0x07
CLOSE_WITHIN = HOSTILE_NODE["network_timeout"] + HOSTILE_NODE["acse_timeout"] + 5


def _reasons(guard: GuardProcess, seq: int) -> list[str]:
    return [str(r["detail"].get("reason")) for r in audits_since(guard, seq)]


def _established(guard: GuardProcess, contexts: list[tuple[str, list[str]]] | None = None, *, source: str = "127.0.0.1") -> RawPeer:
    peer = RawPeer(guard.port, source=source)
    calling = SOURCE_AE if source == "127.0.0.1" else "ELSEWHERE"
    answer = peer.associate(calling, GUARD_AE, contexts or [(CT_STORAGE, [EXPLICIT_LE]), (VERIFICATION, [IMPLICIT_LE])])
    assert answer.pdu_type == A_ASSOCIATE_AC
    return peer


def _ends(peer: RawPeer) -> int | None:
    """The guard's last word: A-ABORT (7), A-ASSOCIATE-RJ (3) or None (closed)."""
    answer = peer.receive(timeout=CLOSE_WITHIN)
    if answer.pdu_type is not None:
        peer.closed_within(CLOSE_WITHIN)
    return answer.pdu_type


def test_unknown_pdu_type_is_dropped(hostile_guard: GuardProcess, contained: int) -> None:
    """A PDU of type 0x09 (none such, PS3.8 9.3.1) closes the connection."""
    del contained
    peer = RawPeer(hostile_guard.port)
    peer.send(pdu(0x09, b"\0" * 10))
    assert _ends(peer) in {None, A_ABORT}


def test_truncated_header_then_silence_is_dropped(hostile_guard: GuardProcess, contained: int) -> None:
    """Three bytes of a header and nothing more: closed within the timeouts, not held forever."""
    del contained
    peer = RawPeer(hostile_guard.port)
    peer.send(b"\x01\x00\x00")
    peer.closed_within(CLOSE_WITHIN)


def test_associate_rq_with_huge_length_is_aborted(hostile_guard: GuardProcess, contained: int) -> None:
    """An A-ASSOCIATE-RQ announcing 4 GB is answered A-ABORT at once, never read into memory; audited."""
    peer = RawPeer(hostile_guard.port)
    peer.send(struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0) + b"\0" * 64)
    assert _ends(peer) == A_ABORT
    wait_until(lambda: "pdu-too-large" in _reasons(hostile_guard, contained), 10, message="not audited")


def test_associate_rq_that_never_completes_is_dropped(hostile_guard: GuardProcess, contained: int) -> None:
    """A header promising 200 bytes followed by 50 and silence: dropped after the timeout."""
    del contained
    peer = RawPeer(hostile_guard.port)
    peer.send(struct.pack(">BBL", 0x01, 0, 200) + b"\0" * 50)
    assert _ends(peer) in {None, A_ABORT}


def test_malformed_associate_rq_is_dropped(hostile_guard: GuardProcess, contained: int) -> None:
    """An A-ASSOCIATE-RQ whose items have wrong lengths is refused or aborted."""
    del contained
    raw = bytearray(associate_rq(SOURCE_AE, GUARD_AE, [(VERIFICATION, [IMPLICIT_LE])]))
    raw[76:78] = b"\xff\xff"  # the application context item's length
    peer = RawPeer(hostile_guard.port)
    peer.send(bytes(raw))
    assert _ends(peer) in {None, A_ABORT, A_ASSOCIATE_RJ}


def test_unknown_calling_ae_is_rejected(hostile_guard: GuardProcess, contained: int) -> None:
    """A well-formed request from an unknown AE gets A-ASSOCIATE-RJ; audited."""
    peer = RawPeer(hostile_guard.port)
    answer = peer.associate("INTRUDER", GUARD_AE, [(VERIFICATION, [IMPLICIT_LE])])
    assert answer.pdu_type == A_ASSOCIATE_RJ
    wait_until(lambda: "calling-ae-not-recognized" in _reasons(hostile_guard, contained), 10, message="not audited")


def test_p_data_larger_than_max_pdu_is_aborted(hostile_guard: GuardProcess, contained: int) -> None:
    """A P-DATA-TF longer than the guard's maximum PDU (PS3.8 D.1) is answered A-ABORT; audited."""
    peer = _established(hostile_guard)
    peer.send(struct.pack(">BBL", 0x04, 0, 262144 + 1000) + b"\0" * 100)
    assert _ends(peer) == A_ABORT
    wait_until(lambda: "pdu-too-large" in _reasons(hostile_guard, contained), 10, message="not audited")


def test_p_data_that_never_ends_is_aborted_and_its_partial_file_removed(hostile_guard: GuardProcess, contained: int) -> None:
    """A C-STORE whose data set never gets its last fragment: aborted after the timeout, no file left behind."""
    del contained
    peer = _established(hostile_guard)
    peer.send(p_data(1, 0x03, command(0x0001, sop_class=CT_STORAGE, sop_instance="1.2.3.4.5", has_dataset=True)))
    for _ in range(5):
        peer.send(p_data(1, 0x00, b"\x08\x00\x16\x00UI\x1a\x001.2.840.10008.5.1.4.1.1.2\x00" * 100))
    assert _ends(peer) in {None, A_ABORT}


def test_command_set_that_never_ends_is_aborted(hostile_guard: GuardProcess, contained: int) -> None:
    """Command fragments without a last one, past 64 KiB: A-ABORT, audited as command-too-large."""
    peer = _established(hostile_guard)
    for _ in range(12):
        if not peer.send(p_data(1, 0x01, b"\0" * 8000)):
            break
    assert _ends(peer) == A_ABORT
    wait_until(lambda: "command-too-large" in _reasons(hostile_guard, contained), 10, message="not audited")


def test_oversized_in_memory_message_is_aborted(hostile_guard: GuardProcess, contained: int) -> None:
    """A C-ECHO that claims a data set and sends 17 MiB of it (held in memory by the library): A-ABORT, audited."""
    peer = _established(hostile_guard)
    peer.send(p_data(3, 0x03, command(0x0030, sop_class=VERIFICATION, has_dataset=True)))
    chunk = b"\0" * 16000
    for _ in range(17 * 1024 * 1024 // len(chunk) + 2):
        if not peer.send(p_data(3, 0x00, chunk)):
            break
    assert _ends(peer) == A_ABORT
    wait_until(lambda: "message-too-large" in _reasons(hostile_guard, contained), 10, message="not audited")


def test_silent_connection_is_dropped_after_the_artim_timeout(hostile_guard: GuardProcess, contained: int) -> None:
    """A connection that never sends its A-ASSOCIATE-RQ is closed after acse_timeout and audited."""
    peer = RawPeer(hostile_guard.port, source="127.0.0.9")
    assert peer.closed_within(CLOSE_WITHIN) >= HOSTILE_NODE["acse_timeout"] - 0.5
    wait_until(lambda: "no-association-request" in _reasons(hostile_guard, contained), 10, message="not audited")


def test_idle_association_is_dropped_after_the_network_timeout(hostile_guard: GuardProcess, contained: int) -> None:
    """An established association that sends nothing is aborted after network_timeout; audited as idle-timeout."""
    peer = _established(hostile_guard, source="127.0.0.5")
    assert _ends(peer) in {None, A_ABORT}
    wait_until(lambda: "idle-timeout" in _reasons(hostile_guard, contained), 10, message="not audited")


def test_connection_flood_is_contained_while_others_are_served(hostile_guard: GuardProcess, contained: int) -> None:
    """60 silent connections from one address: beyond max_pending_per_address closed at once; another peer is served meanwhile."""
    peers: list[RawPeer] = []
    closed_at_once = 0
    for _ in range(60):
        peer = RawPeer(hostile_guard.port, source="127.0.0.7")
        peers.append(peer)
    for peer in peers:
        try:
            peer.sock.settimeout(0.5)
            if peer.sock.recv(1) == b"":
                closed_at_once += 1
        except TimeoutError:
            continue
        except OSError:
            closed_at_once += 1
    assert closed_at_once >= 60 - HOSTILE_NODE["max_pending_per_address"]
    echo_peer = RawPeer(hostile_guard.port)
    assert echo_peer.associate(SOURCE_AE, GUARD_AE, [(VERIFICATION, [IMPLICIT_LE])]).pdu_type == A_ASSOCIATE_AC
    echo_peer.close()
    for peer in peers:
        peer.close()
    wait_until(lambda: "too-many-pending-connections-from-address" in _reasons(hostile_guard, contained), 10, message="not audited")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hs.binary(min_size=1, max_size=512))
def test_random_bytes_after_association_never_break_the_guard(hostile_guard: GuardProcess, contained: int, data: bytes) -> None:
    """Whatever bytes follow an accepted association, the guard ends it (or answers) and keeps serving: C-ECHO after each example."""
    del contained
    peer = _established(hostile_guard)
    try:
        peer.send(data)
        peer.send(struct.pack(">BBL", 0x07, 0, 4) + b"\0\0\0\0")  # then abort, so the example ends quickly
        peer.closed_within(CLOSE_WITHIN)
    finally:
        peer.close()
    echo = echoscu("127.0.0.1", hostile_guard.port, calling_ae=SOURCE_AE, called_ae=GUARD_AE, timeout=10)
    assert echo.returncode == 0, f"no C-ECHO after {data!r}"
