"""The byte checks' C-MOVEs across the two processes (``guard.app.listener_moves``): what each side does with each message."""

from __future__ import annotations

from pathlib import Path

from guard.app.listener_moves import UIDS_PER_MESSAGE, ListenerMoves, MovesOfMain, RemoteRelay, decode, listener_registry
from guard.services.qr.inflight import LISTENER_MESSAGE_IDS, MAIN_MESSAGE_IDS, Arrival


def _main_side(tmp_path: Path) -> tuple[ListenerMoves, list[dict[str, object]]]:
    incoming = tmp_path / ".incoming"
    incoming.mkdir()
    told: list[dict[str, object]] = []
    moves = ListenerMoves(incoming)
    moves.bind(lambda text: told.append(decode(text) or {}) is None)
    return moves, told


def test_a_move_is_announced_in_chunks_and_forgotten_when_it_ends(tmp_path: Path) -> None:
    """Every expected UID reaches the listener, a datagram holding at most ``UIDS_PER_MESSAGE``; closing sends "forget"."""
    moves, told = _main_side(tmp_path)
    expected = {f"1.2.3.{n}" for n in range(UIDS_PER_MESSAGE + 7)}
    relay = moves.open("ARCHIVE", expected)
    assert relay.message_id in MAIN_MESSAGE_IDS
    assert [m["op"] for m in told] == ["expect", "expect"]
    assert {uid for m in told for uid in m["uids"]} == expected  # type: ignore[attr-defined]
    assert max(len(m["uids"]) for m in told) == UIDS_PER_MESSAGE  # type: ignore[arg-type]
    moves.close(relay)
    assert told[-1] == {"op": "forget", "id": relay.message_id}


def test_a_new_listener_process_is_told_every_move_still_open(tmp_path: Path) -> None:
    """After a restart of the listener process (its "port" message), the moves in flight are announced again; ended ones are not."""
    moves, told = _main_side(tmp_path)
    kept, ended = moves.open("ARCHIVE", {"1.1"}), moves.open("ARCHIVE", {"2.2"})
    moves.close(ended)
    told.clear()
    moves.announce_all()
    assert told == [{"op": "expect", "id": kept.message_id, "ae": "ARCHIVE", "uids": ["1.1"]}]


def test_an_arrival_reaches_its_move_and_one_for_an_ended_move_is_removed(tmp_path: Path) -> None:
    """The listener's file goes to the open move's inbox; for a move already closed it is deleted, not left in the spool."""
    moves, _told = _main_side(tmp_path)
    relay = moves.open("ARCHIVE", {"1.1", "1.2"})
    first, late = tmp_path / ".incoming" / "relay-a", tmp_path / ".incoming" / "relay-b"
    first.write_bytes(b"x")
    late.write_bytes(b"y")
    moves.arrived({"op": "arrived", "id": relay.message_id, "uid": "1.1", "path": str(first)})
    assert relay.inbox.get_nowait() == Arrival(first, "1.1")
    moves.close(relay)
    moves.arrived({"op": "arrived", "id": relay.message_id, "uid": "1.2", "path": str(late)})
    assert not late.exists()


def test_an_arrival_outside_the_receiving_folder_is_never_touched(tmp_path: Path) -> None:
    """A path that is not a relay file of the spool's receiving folder is refused and left where it is."""
    moves, _told = _main_side(tmp_path)
    relay = moves.open("ARCHIVE", {"1.1"})
    elsewhere = tmp_path / "relay-precious"
    elsewhere.write_bytes(b"keep")
    not_a_relay_file = tmp_path / ".incoming" / "tmp-ingest"
    not_a_relay_file.write_bytes(b"keep")
    for path in (elsewhere, not_a_relay_file):
        moves.arrived({"op": "arrived", "id": relay.message_id, "uid": "1.1", "path": str(path)})
        assert path.exists()
    assert relay.inbox.empty()


def test_the_listener_side_matches_the_main_processs_moves_and_hands_their_instances_over(tmp_path: Path) -> None:
    """Expect (twice, adding), match by originator ID or by UID, hand over, forget; the listener's own IDs are never taken over."""
    registry = listener_registry()
    sent: list[tuple[str, float]] = []
    side = MovesOfMain(registry, lambda text, timeout: sent.append((text, timeout)) is None)
    main_id = MAIN_MESSAGE_IDS.start + 5
    side.handle({"op": "expect", "id": main_id, "ae": "ARCHIVE", "uids": ["1.1"]})
    side.handle({"op": "expect", "id": main_id, "ae": "ARCHIVE", "uids": ["1.2"]})
    side.handle({"op": "expect", "id": LISTENER_MESSAGE_IDS.start, "ae": "ARCHIVE", "uids": ["9.9"]})
    relay = registry.match("ARCHIVE", "GUARD", main_id, "1.1")
    assert isinstance(relay, RemoteRelay)
    assert relay.expected == {"1.1", "1.2"}
    assert registry.match("ARCHIVE", "", None, "1.2") is relay
    assert registry.match("OTHER", "GUARD", main_id, "1.1") is None  # only the archive's sub-operations
    assert registry.get(LISTENER_MESSAGE_IDS.start) is None
    assert relay.deliver(Arrival(tmp_path / "relay-x", "1.1"), 2.0)
    assert [(decode(text), timeout) for text, timeout in sent] == [
        ({"op": "arrived", "id": main_id, "uid": "1.1", "path": str(tmp_path / "relay-x")}, 2.0)
    ]
    side.handle({"op": "forget", "id": main_id})
    assert registry.match("ARCHIVE", "GUARD", main_id, "1.1") is None
    assert registry.open("ARCHIVE", {"3.3"}).message_id in LISTENER_MESSAGE_IDS
