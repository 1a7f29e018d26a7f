"""The relayed moves in flight, shared between the C-MOVE handler and the listener's C-STORE threads.

Each relayed move registers under the Message ID of the guard's own C-MOVE to the archive; the
archive's C-STORE sub-operations are matched to it by Move Originator Message ID (PS3.7
9.3.1.1), or by SOP Instance UID when the archive leaves that out, and handed over in their
temporary files, at most ``BUFFERED_INSTANCES`` at a time.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

#: Instances taken from the archive ahead of the one being sent to the destination: receiving
#: the next overlaps sending the current one. Each waits in its own temporary file.
BUFFERED_INSTANCES = 4

#: Message IDs are US (PS3.7 E.1). With the listener in its own process (``guard.app.listener_moves``)
#: its relays take the lower half and the main process's byte-check moves the upper half.
MESSAGE_IDS = range(1, 65536)
LISTENER_MESSAGE_IDS = range(1, 32768)
MAIN_MESSAGE_IDS = range(32768, 65536)


@dataclass(frozen=True)
class Arrival:
    """One instance the archive sent for a relayed move, waiting in its temporary file to be relayed."""

    path: Path
    sop_instance_uid: str


@dataclass(frozen=True)
class ArchiveDone:
    """The archive's final C-MOVE response (``status`` None: no response at all)."""

    status: int | None
    error: str = ""


class ActiveRelay:
    """The in-flight state of one relayed move shared with the listener's C-STORE threads."""

    def __init__(self, message_id: int, archive_ae: str, expected: set[str], *, buffered: int | None = BUFFERED_INSTANCES) -> None:
        """Relay instances from ``archive_ae`` sent under ``message_id``, at most ``buffered`` waiting (None: no bound)."""
        self.message_id = message_id
        self.archive_ae = archive_ae
        self.expected = expected
        self.inbox: queue.Queue[Arrival | ArchiveDone] = queue.Queue()
        self._room = None if buffered is None else threading.Semaphore(buffered)
        self._lock = threading.Lock()
        self._closed = False

    def deliver(self, arrival: Arrival, timeout: float) -> bool:
        """Take an instance once there is room (bounded wait); its file then belongs to the relay.

        False when the relay has ended or had no room in time: the caller keeps the file.
        """
        if self._room is not None and not self._room.acquire(timeout=timeout):
            return False
        with self._lock:
            if self._closed:
                if self._room is not None:
                    self._room.release()
                return False
            self.inbox.put(arrival)
        return True

    def done_with(self, arrival: Arrival) -> None:
        """The instance was sent on (or dropped): remove its temporary file and make room for the next."""
        arrival.path.unlink(missing_ok=True)
        if self._room is not None:
            self._room.release()

    def close(self) -> None:
        """No more instances: the files of those still waiting are removed."""
        with self._lock:
            self._closed = True
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Arrival):
                self.done_with(item)


class RelayRegistry:
    """The relays in flight, keyed by the Message ID of the guard's C-MOVE to the archive."""

    def __init__(self, ids: range = MESSAGE_IDS) -> None:
        """Start with none; give the relays Message IDs from ``ids``."""
        self._lock = threading.Lock()
        self._relays: dict[int, ActiveRelay] = {}
        self._ids = itertools.cycle(ids)

    def open(self, archive_ae: str, expected: set[str]) -> ActiveRelay:
        """Register a relay under a Message ID no other relay in flight uses."""
        with self._lock:
            message_id = next(i for i in self._ids if i not in self._relays)
            relay = self._relays[message_id] = self._new_relay(message_id, archive_ae, expected)
        return relay

    def _new_relay(self, message_id: int, archive_ae: str, expected: set[str]) -> ActiveRelay:
        return ActiveRelay(message_id, archive_ae, expected)

    def adopt(self, relay: ActiveRelay) -> None:
        """Register ``relay`` under its own Message ID (one another process opened, ``guard.app.listener_moves``)."""
        with self._lock:
            self._relays[relay.message_id] = relay

    def get(self, message_id: int) -> ActiveRelay | None:
        """The relay in flight under ``message_id``, if any."""
        with self._lock:
            return self._relays.get(message_id)

    def in_flight(self) -> list[ActiveRelay]:
        """The relays in flight now."""
        with self._lock:
            return list(self._relays.values())

    def close(self, relay: ActiveRelay) -> None:
        """Forget a relay and fail what still waits for it."""
        with self._lock:
            self._relays.pop(relay.message_id, None)
        relay.close()

    def match(self, calling_ae: str, originator_ae: str, originator_id: int | None, sop_instance_uid: str) -> ActiveRelay | None:
        """The relay an incoming C-STORE belongs to, if any (only ever from the archive)."""
        with self._lock:
            if originator_ae and originator_id is not None:
                relay = self._relays.get(originator_id)
                return relay if relay is not None and relay.archive_ae == calling_ae else None
            return next((r for r in self._relays.values() if r.archive_ae == calling_ae and sop_instance_uid in r.expected), None)
