"""Byte checks by C-MOVE while the DICOM listener runs in a process of its own (``node.listener_process``).

A byte check by C-MOVE (``verify.retrieve = c-move``, or ``auto`` against an archive that does
not offer C-GET; ``guard.services.verify.move``) asks the archive, from the main process, to move
instances to the guard's own AE title. Their C-STORE sub-operations arrive on the listener, in the
child. The two processes share the datagram channel of ``guard.app.listener_process``:

- main to child, when a move starts: ``{"op": "expect", "id": N, "ae": AE, "uids": [...]}``, the
  Message ID of the guard's C-MOVE, the archive's AE title and the instances it should send (in
  several datagrams for a large series, each adding to the first); when it ends:
  ``{"op": "forget", "id": N}``. A new child (after a restart) is told every move still open.
- child to main, for each sub-operation matched to such a move: ``{"op": "arrived", "id": N,
  "uid": UID, "path": PATH}``. The child has renamed the received file for the move, as its own
  relays do (``guard.services.qr.move``); from then on the file is the main process's, which
  digests and removes it. The child answers the archive Success only once the message is sent;
  if it cannot be sent in time the archive gets a failure and the instance counts as not moved:
  the byte check then finds no matching copy, and a delete that needs it is refused.

The Message IDs are split (``guard.services.qr.inflight``): the listener's own relays take the
lower half, these moves the upper half, so the listener matches each sub-operation to one move.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from guard.services.qr.inflight import LISTENER_MESSAGE_IDS, MAIN_MESSAGE_IDS, ActiveRelay, Arrival, RelayRegistry

log = structlog.get_logger("guard.app.listener_moves")

#: SOP Instance UIDs in one "expect" datagram (at most 64 characters each: about 33 KB).
UIDS_PER_MESSAGE = 500
#: Largest datagram either side reads.
MAX_MESSAGE = 65536


def encode(message: dict[str, Any]) -> str:
    """One channel message (ASCII JSON)."""
    return json.dumps(message, separators=(",", ":"))


def decode(text: str) -> dict[str, Any] | None:
    """The message in ``text``, or None when it is not one of these (malformed text is ignored)."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message if isinstance(message, dict) and isinstance(message.get("id"), int) else None


class ListenerMoves(RelayRegistry):
    """The main process's moves for byte checks, announced to the listener process that receives their instances."""

    def __init__(self, incoming: Path) -> None:
        """Moves whose instances the listener receives into ``incoming`` (the spool's receiving folder)."""
        super().__init__(MAIN_MESSAGE_IDS)
        self.incoming = incoming.resolve()
        self._tell: Callable[[str], bool] = lambda _message: False

    def bind(self, tell: Callable[[str], bool]) -> None:
        """Send messages to the listener process with ``tell`` (False when one could not be sent)."""
        self._tell = tell

    def _new_relay(self, message_id: int, archive_ae: str, expected: set[str]) -> ActiveRelay:
        # The listener process cannot wait for room here: the verifier digests each file as it comes.
        return ActiveRelay(message_id, archive_ae, expected, buffered=None)

    def open(self, archive_ae: str, expected: set[str]) -> ActiveRelay:
        """Register the move here and announce it to the listener process."""
        relay = super().open(archive_ae, expected)
        self._announce(relay)
        return relay

    def close(self, relay: ActiveRelay) -> None:
        """Forget the move here and in the listener process."""
        super().close(relay)
        self._tell(encode({"op": "forget", "id": relay.message_id}))

    def announce_all(self) -> None:
        """Tell a (new) listener process every move still open."""
        for relay in self.in_flight():
            self._announce(relay)

    def _announce(self, relay: ActiveRelay) -> None:
        uids = sorted(relay.expected)
        for start in range(0, max(len(uids), 1), UIDS_PER_MESSAGE):
            chunk = uids[start : start + UIDS_PER_MESSAGE]
            if not self._tell(encode({"op": "expect", "id": relay.message_id, "ae": relay.archive_ae, "uids": chunk})):
                log.warning("verify.move_not_announced", action="verify.move_not_announced", message_id=relay.message_id)
                return

    def arrived(self, message: dict[str, Any]) -> None:
        """An instance the listener process received for one of these moves: to its relay, or removed when the move has ended."""
        path = Path(str(message.get("path", "")))
        if path.parent.resolve() != self.incoming or not path.name.startswith("relay-"):
            log.warning("verify.move_arrival_refused", action="verify.move_arrival_refused", path=str(path))
            return  # not a file this guard's listener receives into: never touch it
        relay = self.get(int(message["id"]))
        if relay is None or not relay.deliver(Arrival(path, str(message.get("uid", ""))), timeout=0):
            path.unlink(missing_ok=True)


class RemoteRelay(ActiveRelay):
    """In the listener process: a move of the main process; each instance is handed over to it."""

    def __init__(self, message_id: int, archive_ae: str, expected: set[str], hand_over: Callable[[int, Arrival, float], bool]) -> None:
        """A move ``message_id`` of the main process; ``hand_over`` sends an arrival to it."""
        super().__init__(message_id, archive_ae, expected, buffered=None)
        self._hand_over = hand_over

    def deliver(self, arrival: Arrival, timeout: float) -> bool:
        """Hand the instance to the main process (bounded); True once it is the main process's file."""
        return self._hand_over(self.message_id, arrival, timeout)


class MovesOfMain:
    """In the listener process: the main process's moves, registered with the listener's own relays."""

    def __init__(self, registry: RelayRegistry, send: Callable[[str, float], bool]) -> None:
        """Register in ``registry``; send arrivals with ``send(message, timeout)``."""
        self.registry = registry
        self.send = send

    def handle(self, message: dict[str, Any]) -> None:
        """Apply an "expect" or "forget" message of the main process."""
        message_id = int(message["id"])
        if message_id not in MAIN_MESSAGE_IDS:
            return  # never one of the listener's own relays
        existing = self.registry.get(message_id)
        if message.get("op") == "forget":
            if existing is not None:
                self.registry.close(existing)
        elif message.get("op") == "expect":
            uids = {str(uid) for uid in message.get("uids", [])}
            if isinstance(existing, RemoteRelay):
                existing.expected.update(uids)
            else:
                self.registry.adopt(RemoteRelay(message_id, str(message.get("ae", "")), uids, self._hand_over))

    def _hand_over(self, message_id: int, arrival: Arrival, timeout: float) -> bool:
        return self.send(encode({"op": "arrived", "id": message_id, "uid": arrival.sop_instance_uid, "path": str(arrival.path)}), timeout)


def listener_registry() -> RelayRegistry:
    """The listener process's relays: Message IDs of the lower half (the main process's moves take the upper)."""
    return RelayRegistry(LISTENER_MESSAGE_IDS)
