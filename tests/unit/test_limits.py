"""Per-address accounting, the refusal throttle and the command-set reader of the listener's limits."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as hs

from guard.domain.throttle import RefusalThrottle
from guard.listener.limits import Limits, PeerAccounting, command_field, peer_has_closed


def test_pending_connections_are_capped_per_address_and_in_total() -> None:
    """A fifth pending connection from one address is refused; others still get in until the total cap."""
    accounting = PeerAccounting(Limits(max_pending_per_address=4, max_pending=6))
    assert [accounting.open_connection("10.0.0.1") for _ in range(5)] == [None] * 4 + ["too-many-pending-connections-from-address"]
    assert accounting.open_connection("10.0.0.2") is None
    assert accounting.open_connection("10.0.0.3") is None
    assert accounting.open_connection("10.0.0.4") == "too-many-pending-connections"


def test_associations_are_capped_and_released() -> None:
    """Associations count per address and in total; a closed one frees its place."""
    accounting = PeerAccounting(Limits(max_associations=3, max_associations_per_address=2, max_pending_per_address=9))
    for _ in range(3):
        assert accounting.open_connection("a") is None
    assert [accounting.admit("a") for _ in range(3)] == [None, None, "too-many-associations-from-address"]
    assert accounting.open_connection("b") is None
    assert accounting.admit("b") is None
    assert accounting.open_connection("c") is None
    assert accounting.admit("c") == "too-many-associations"
    accounting.close("a", admitted=True, requested=True)
    assert accounting.open_connection("c") is None
    assert accounting.admit("c") is None
    assert accounting.snapshot() == {"pending": {}, "associations": {"a": 1, "b": 1, "c": 1}}


@given(hs.lists(hs.tuples(hs.sampled_from("abc"), hs.booleans()), max_size=60))
def test_accounting_returns_to_zero(sequence: list[tuple[str, bool]]) -> None:
    """Whatever connections come and go, once all are closed nothing stays counted."""
    accounting = PeerAccounting(Limits(max_associations=4, max_associations_per_address=2, max_pending=5, max_pending_per_address=2))
    open_ones: list[tuple[str, bool, bool]] = []
    for address, asks in sequence:
        if accounting.open_connection(address) is not None:
            continue
        admitted = asks and accounting.admit(address) is None
        open_ones.append((address, admitted, asks))
        snap = accounting.snapshot()
        assert sum(snap["associations"].values()) <= 4
        assert all(n <= 2 for n in snap["associations"].values())
    for address, admitted, asks in open_ones:
        accounting.close(address, admitted=admitted, requested=asks)
    assert accounting.snapshot() == {"pending": {}, "associations": {}}


def test_throttle_folds_repeats_into_the_next_report() -> None:
    """Within the window repeats are counted, not reported; other addresses are reported at once."""
    reports: list[tuple[str, str, dict[str, Any]]] = []
    throttle = RefusalThrottle(lambda a, r, d: reports.append((a, r, d)), window=3600)
    for _ in range(5):
        throttle("a", "too-many", {})
    throttle("b", "too-many", {})
    assert reports == [("a", "too-many", {"count": 1}), ("b", "too-many", {"count": 1})]


def _element(tag: tuple[int, int], value: bytes) -> bytes:
    return struct.pack("<HHI", *tag, len(value)) + value


def test_command_field_is_read_from_an_implicit_little_endian_command_set() -> None:
    """The Command Field is found among other elements; garbage or truncation gives None, never an error."""
    command = _element((0, 0x0002), b"1.2.840.10008.5.1.4.1.1.2\x00") + _element((0, 0x0100), struct.pack("<H", 1))
    assert command_field(command) == 1
    assert command_field(command[:-1]) is None
    assert command_field(b"") is None


@given(hs.binary(max_size=300))
def test_command_field_never_raises(data: bytes) -> None:
    """Any bytes at all: an int or None."""
    result = command_field(data)
    assert result is None or 0 <= result <= 0xFFFF


def test_a_closed_peer_is_told_from_a_silent_one_at_once() -> None:
    """peer_has_closed: False at once for a silent peer on a socket with a timeout (no wait), True once the peer has closed."""
    accepted, peer = socket.socketpair()
    try:
        accepted.settimeout(5)
        started = time.monotonic()
        assert peer_has_closed(accepted) is False
        assert time.monotonic() - started < 1
        peer.sendall(b"\x01")
        assert peer_has_closed(accepted) is False  # data waiting: an A-ASSOCIATE-RQ on its way, not a close
        assert accepted.recv(1) == b"\x01"
        peer.close()
        assert peer_has_closed(accepted) is True
    finally:
        accepted.close()
