"""Sessions that end in the middle of a receive, or say the same thing twice: no file is left in the spool's incoming folder.

A raw peer (``tests/hostile/peer.py``) ends the association at the worst moment. Every case
uses the ``contained`` fixture, which afterwards waits (bounded) for the incoming folder to be
empty and checks that the guard still answers C-ECHO and that nothing else changed.
"""

from __future__ import annotations

import struct

import pytest

from guard.domain import status as st
from tests.hostile.conftest import HOSTILE_NODE, incoming_files
from tests.hostile.peer import CT_STORAGE, EXPLICIT_LE, IMPLICIT_LE, VERIFICATION, RawPeer, command, p_data, pdu, status_of
from tests.hostile.test_datasets import header
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop

A_ASSOCIATE_AC, P_DATA_TF = 0x02, 0x04
A_ABORT = struct.pack(">BBL", 0x07, 0, 4) + b"\0\0\0\0"
A_RELEASE_RQ = pdu(0x05, b"\0\0\0\0")
CLOSE_WITHIN = HOSTILE_NODE["network_timeout"] + HOSTILE_NODE["acse_timeout"] + 5
#: Far more than one PDU's worth, so the guard has opened and written the data set's file.
FRAGMENT = b"\x08\x00\x16\x00UI\x1a\x001.2.840.10008.5.1.4.1.1.2\x00" * 400


def _established(guard: GuardProcess) -> RawPeer:
    peer = RawPeer(guard.port)
    answer = peer.associate(SOURCE_AE, GUARD_AE, [(CT_STORAGE, [EXPLICIT_LE]), (VERIFICATION, [IMPLICIT_LE])])
    assert answer.pdu_type == A_ASSOCIATE_AC
    return peer


def _store_command(sop_instance: str) -> bytes:
    return p_data(1, 0x03, command(0x0001, sop_class=CT_STORAGE, sop_instance=sop_instance, has_dataset=True))


def _receiving(guard: GuardProcess) -> None:
    """Wait until the guard has a file in its incoming folder: the data set is being written."""
    wait_until(lambda: incoming_files(guard), 10, message="the guard never started writing the data set")


def _ended(guard: GuardProcess, peer: RawPeer) -> None:
    """Close our end once the guard closed its own, then wait (bounded) for the incoming folder to be empty."""
    try:
        peer.closed_within(CLOSE_WITHIN)
    finally:
        peer.close()
    wait_until(lambda: not incoming_files(guard), 10, message=f"partial files left: {incoming_files(guard)}")


def test_abort_in_the_middle_of_a_data_set(hostile_guard: GuardProcess, contained: int) -> None:
    """A-ABORT after a few data set fragments: once the association has ended the partial file is gone."""
    del contained
    peer = _established(hostile_guard)
    peer.send(_store_command("1.2.3.4.6"))
    for _ in range(3):
        peer.send(p_data(1, 0x00, FRAGMENT))
    _receiving(hostile_guard)
    peer.send(A_ABORT)
    _ended(hostile_guard, peer)


def test_release_in_the_middle_of_a_data_set(hostile_guard: GuardProcess, contained: int) -> None:
    """A-RELEASE-RQ before the data set's last fragment: the association ends and its partial file is removed."""
    del contained
    peer = _established(hostile_guard)
    peer.send(_store_command("1.2.3.4.7"))
    for _ in range(3):
        peer.send(p_data(1, 0x00, FRAGMENT))
    _receiving(hostile_guard)
    peer.send(A_RELEASE_RQ)
    _ended(hostile_guard, peer)


def test_store_command_sent_twice(hostile_guard: GuardProcess, contained: int) -> None:
    """A C-STORE command message sent twice, then its data set: answered once, and no copy stays in the incoming folder."""
    del contained
    sop = "../../twice"  # refused (0xC000) so that nothing is stored: the case is about the incoming folder
    peer = _established(hostile_guard)
    peer.send(_store_command(sop))
    peer.send(_store_command(sop))
    peer.send(p_data(1, 0x02, header(sop)))
    answer = peer.receive(timeout=30)
    assert answer.pdu_type == P_DATA_TF
    assert status_of(answer.body) == st.CANNOT_UNDERSTAND
    peer.send(A_RELEASE_RQ)
    _ended(hostile_guard, peer)


def test_abort_right_after_a_complete_data_set(hostile_guard: GuardProcess, contained: int) -> None:
    """A whole C-STORE then A-ABORT at once, before any answer: whether or not it was served, no file stays behind."""
    del contained
    sop = "../../aborted"
    peer = _established(hostile_guard)
    peer.send(_store_command(sop) + p_data(1, 0x00, FRAGMENT) + p_data(1, 0x02, header(sop)) + A_ABORT)
    _ended(hostile_guard, peer)
