"""Limits that keep one bad peer from taking the DICOM listener down.

Three layers, cheapest first:

1. At accept (``LimitedAssociationServer.verify_request``, in the accept loop, before any
   thread): connections that have not yet sent their A-ASSOCIATE-RQ are capped per address and
   in total (``node.max_pending_per_address``, ``node.max_pending``); over the cap the connection
   is closed at once. A connection whose peer closes it before asking (a port probe, a health
   check) gives its place back at once and is not audited. These refusals are audited at most
   once per ``guard.domain.throttle.AUDIT_WINDOW`` seconds per address and reason, with the
   count, so a flood cannot turn into a flood of ledger writes. The kernel queues up to
   ``node.accept_backlog`` connections before the accept loop takes them.
2. At the A-ASSOCIATE-RQ (``admit_association``, called from the EVT_REQUESTED handler):
   associations are capped per address and in total; over the cap the peer gets
   A-ASSOCIATE-RJ rejected-transient, service-provider (presentation), local-limit-exceeded
   (PS3.8 9.3.4), audited as ``association.rejected``.
3. On every byte (``GuardedSocket``): the socket has a timeout (``node.network_timeout``), so
   a peer that stops sending in the middle of a PDU, or stops reading what the guard sends,
   ends its association instead of holding a thread forever; a PDU must arrive whole within
   that time; a PDU longer than the guard accepts, a command set over 64 KiB, or a data set
   that pynetdicom would hold in memory (anything but C-STORE) over 16 MiB is answered with
   A-ABORT and audited as ``security.alert``. C-STORE data sets stream to disk and are capped
   by ``node.max_dataset_size`` (``guard.runtime.IncomingFile``), with a 0xA700 answer.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from pynetdicom.transport import AssociationSocket, RequestHandler

from guard import runtime
from guard.config.settings import NodeSettings
from guard.dicom.net import QuietAssociationServer
from guard.domain.throttle import RefusalThrottle, Reporter

#: Hard ceiling for a P-DATA-TF PDU when ``node.max_pdu`` is 0 (no limit proposed).
MAX_PDU_CEILING = 64 * 1024 * 1024
#: Largest A-ASSOCIATE-RQ (or other non-data PDU) accepted; 128 contexts with many syntaxes fit.
MAX_CONTROL_PDU = 1024 * 1024
#: Largest command set (PS3.7 6.3.1): real ones are a few hundred bytes.
MAX_COMMAND_SET = 64 * 1024
#: Largest data set pynetdicom holds in memory (N-ACTION, N-EVENT-REPORT, C-FIND identifiers).
MAX_BUFFERED_DATASET = 16 * 1024 * 1024

_C_STORE_RQ = 0x0001
_PDU_TOO_LARGE = "pdu-too-large"
_COMMAND_TOO_LARGE = "command-too-large"
_MESSAGE_TOO_LARGE = "message-too-large"
_P_DATA_TF = 0x04
# A-ABORT, service-provider source (PS3.8 9.3.8): reason 0 not specified, 6 invalid PDU parameter value.
_ABORT_NOT_SPECIFIED = 0x00
_ABORT_INVALID_PARAMETER = 0x06


@dataclass(frozen=True)
class Limits:
    """The listener's limits, from ``[node]``."""

    max_associations: int = 20
    max_associations_per_address: int = 8
    max_pending: int = 64
    max_pending_per_address: int = 4
    max_pdu: int = 262144
    network_timeout: float = 60.0
    acse_timeout: float = 30.0
    accept_backlog: int = 128

    @classmethod
    def from_settings(cls, node: NodeSettings) -> Limits:
        """The limits configured in ``[node]``."""
        return cls(
            max_associations=node.max_associations,
            max_associations_per_address=node.max_associations_per_address,
            max_pending=node.max_pending,
            max_pending_per_address=node.max_pending_per_address,
            max_pdu=node.max_pdu,
            network_timeout=node.network_timeout,
            acse_timeout=node.acse_timeout,
            accept_backlog=node.accept_backlog,
        )

    def max_pdu_length(self, pdu_type: int) -> int:
        """Longest PDU of ``pdu_type`` accepted (PS3.8 D.1: the peer must respect the proposed maximum)."""
        if pdu_type == _P_DATA_TF:
            return self.max_pdu or MAX_PDU_CEILING
        return MAX_CONTROL_PDU


@dataclass
class _Counts:
    pending: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    associations: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))


class PeerAccounting:
    """Connections and associations per peer address, thread-safe."""

    def __init__(self, limits: Limits) -> None:
        """Count against ``limits``."""
        self.limits = limits
        self._lock = threading.Lock()
        self._counts = _Counts()

    def open_connection(self, address: str) -> str | None:
        """Count a new connection as pending; the refusal reason when over a cap (then nothing is counted)."""
        with self._lock:
            pending = self._counts.pending
            if pending.get(address, 0) >= self.limits.max_pending_per_address:
                return "too-many-pending-connections-from-address"
            if sum(pending.values()) >= self.limits.max_pending:
                return "too-many-pending-connections"
            pending[address] += 1
            return None

    def admit(self, address: str) -> str | None:
        """Turn a pending connection into an association; the refusal reason when over a cap."""
        with self._lock:
            self._drop(self._counts.pending, address)
            associations = self._counts.associations
            if associations.get(address, 0) >= self.limits.max_associations_per_address:
                return "too-many-associations-from-address"
            if sum(associations.values()) >= self.limits.max_associations:
                return "too-many-associations"
            associations[address] += 1
            return None

    def close(self, address: str, *, admitted: bool, requested: bool) -> None:
        """Forget a finished connection."""
        with self._lock:
            if admitted:
                self._drop(self._counts.associations, address)
            elif not requested:
                self._drop(self._counts.pending, address)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Current counts (for tests and diagnostics)."""
        with self._lock:
            return {"pending": dict(self._counts.pending), "associations": dict(self._counts.associations)}

    @staticmethod
    def _drop(counts: defaultdict[str, int], address: str) -> None:
        """One fewer for ``address``; an address at zero is forgotten (reads use ``get``, so none lingers)."""
        left = counts.get(address, 0) - 1
        if left > 0:
            counts[address] = left
        else:
            counts.pop(address, None)


def command_field(command_set: bytes) -> int | None:
    """The Command Field (0000,0100) of an encoded command set (Implicit VR Little Endian), if present."""
    pos = 0
    while pos + 8 <= len(command_set):
        group, element, length = struct.unpack_from("<HHI", command_set, pos)
        if (group, element) == (0x0000, 0x0100) and length == 2 and pos + 10 <= len(command_set):
            return int(struct.unpack_from("<H", command_set, pos + 8)[0])
        pos += 8 + length
    return None


class LimitViolationError(OSError):
    """A peer broke a limit; pynetdicom treats it as a closed connection (Evt17)."""

    def __init__(self, reason: str, detail: dict[str, Any]) -> None:
        """Keep the machine-readable ``reason`` and its ``detail``."""
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class GuardedSocket(AssociationSocket):
    """An association socket with a timeout, a deadline per PDU, and size limits on what it receives."""

    limits: Limits
    report: Reporter | None
    peer: str
    #: The peer closed the connection before sending an A-ASSOCIATE-RQ (a port probe).
    left_unasked: bool

    def guard(self, limits: Limits, report: Reporter | None, peer: str) -> None:
        """Apply ``limits``; report violations by ``peer`` to ``report``."""
        self.limits = limits
        self.report = report
        self.peer = peer
        self.left_unasked = False
        self._pdu_type: int | None = None
        self._command = bytearray()
        self._dataset_bytes = 0
        self._is_store = False
        self._last_received = time.monotonic()
        if self.socket is not None:
            self.socket.settimeout(limits.network_timeout)

    def idle_for(self) -> float:
        """Seconds since the peer last sent anything."""
        return time.monotonic() - self._last_received

    def recv(self, nr_bytes: int) -> bytearray:
        """Read a PDU header (6 bytes) or the body announced by the previous header, within the limits."""
        try:
            return self._recv_checked(nr_bytes)
        except LimitViolationError as exc:
            self._abort(exc)
            raise

    def _recv_checked(self, nr_bytes: int) -> bytearray:
        deadline = time.monotonic() + self.limits.network_timeout
        if self._pdu_type is None:
            header = self._read(nr_bytes, deadline)
            if not header:
                self._peer_closed()
            elif len(header) == 6:
                pdu_type, _, length = struct.unpack(">BBL", header)
                if length > self.limits.max_pdu_length(pdu_type):
                    detail = {"pdu_type": pdu_type, "length": length, "limit": self.limits.max_pdu_length(pdu_type)}
                    raise LimitViolationError(_PDU_TOO_LARGE, detail)
                self._pdu_type = pdu_type
            return header
        pdu_type, self._pdu_type = self._pdu_type, None
        body = self._read(nr_bytes, deadline)
        if pdu_type == _P_DATA_TF and len(body) == nr_bytes:
            self._inspect(body)
        return body

    def _peer_closed(self) -> None:
        """The peer closed the connection; before its A-ASSOCIATE-RQ, end the wait for one now.

        pynetdicom handles that close (Evt17 in Sta2, action AA-5, PS3.8 9.2) by stopping the
        ARTIM timer and nothing else, so the association thread would keep waiting for a request
        until ``acse_timeout`` and the connection would stay counted as pending: four port probes
        would lock their address out. An empty item on the queue the acceptor waits on is what it
        gets when that wait times out, and it then closes the connection.
        """
        dul = self.assoc.dul
        if dul.state_machine.current_state == "Sta2" and self.assoc.requestor.primitive is None:
            self.left_unasked = True
            dul.to_user_queue.put(None)

    def _read(self, nr_bytes: int, deadline: float) -> bytearray:
        """Read exactly ``nr_bytes`` unless the peer closes; TimeoutError once ``deadline`` passes."""
        sock = self.socket
        data = bytearray()
        while sock is not None and len(data) < nr_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                msg = f"PDU incomplete after {self.limits.network_timeout:.0f} s ({len(data)} of {nr_bytes} bytes)"
                raise TimeoutError(msg)
            sock.settimeout(min(remaining, self.limits.network_timeout))
            chunk = sock.recv(min(65536, nr_bytes - len(data)))
            if not chunk:
                break
            self._last_received = time.monotonic()
            data.extend(chunk)
        if sock is not None:
            sock.settimeout(self.limits.network_timeout)
        return data

    def _inspect(self, body: bytearray) -> None:
        """Follow the PDVs of a P-DATA-TF (PS3.8 9.3.5, E.2) to cap command and in-memory data set sizes."""
        pos = 0
        while pos + 6 <= len(body):
            (item_length,) = struct.unpack_from(">L", body, pos)
            end = pos + 4 + item_length
            if item_length < 2 or end > len(body):
                return
            control = body[pos + 5]  # data fragments are only counted, never copied
            if control & 0x01:
                self._command.extend(body[pos + 6 : end])
                if len(self._command) > MAX_COMMAND_SET:
                    raise LimitViolationError(_COMMAND_TOO_LARGE, {"limit": MAX_COMMAND_SET})
                if control & 0x02:
                    self._is_store = command_field(bytes(self._command)) == _C_STORE_RQ
                    self._command.clear()
                    self._dataset_bytes = 0
            else:
                self._dataset_bytes += end - pos - 6
                if not self._is_store and self._dataset_bytes > MAX_BUFFERED_DATASET:
                    raise LimitViolationError(_MESSAGE_TOO_LARGE, {"limit": MAX_BUFFERED_DATASET})
                if control & 0x02:
                    self._dataset_bytes = 0
            pos = end

    def _abort(self, exc: LimitViolationError) -> None:
        """Tell the peer (A-ABORT, service provider) and report; pynetdicom then closes the connection."""
        reason = _ABORT_INVALID_PARAMETER if exc.reason == _PDU_TOO_LARGE else _ABORT_NOT_SPECIFIED
        if self.socket is not None:
            try:
                self.socket.settimeout(1.0)
                self.socket.sendall(struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0x02, reason))
            except OSError:
                pass
        if self.report is not None:
            self.report(self.peer, exc.reason, exc.detail)


class LimitedRequestHandler(RequestHandler):
    """Builds each association on a ``GuardedSocket`` and serves it to its end on this thread."""

    server: LimitedAssociationServer

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        sock = assoc.dul.socket
        # Same object, stricter reads: a second socket would announce the connection twice (Evt5).
        sock.__class__ = GuardedSocket
        cast("GuardedSocket", sock).guard(self.server.limits, self.server.report_violation, str(self.client_address[0]))
        self.server.bind_slot(self.request, assoc)
        return assoc

    def handle(self) -> None:
        """Serve the association and wait for its end, so the connection is counted for as long as it lives."""
        super().handle()
        assoc = self.server.slot_assoc(self.request)
        if assoc is not None:
            assoc.join()
            # Whatever the association ended on (an abort mid-data-set, a release, a command sent
            # twice, a message never served), no file it was receiving stays in the spool.
            runtime.release_incoming(assoc)
            sock = assoc.dul.socket
            idle = isinstance(sock, GuardedSocket) and sock.idle_for() >= 0.9 * sock.limits.network_timeout
            if idle and assoc.accepted_contexts and not assoc.is_released and self.server.report_idle is not None:
                self.server.report_idle(str(self.client_address[0]), "idle-timeout", {"limit": "network_timeout"})


@dataclass
class _Slot:
    address: str
    request: Any = None
    opened: float = field(default_factory=time.monotonic)
    assoc: Any = None
    requested: bool = False
    admitted: bool = False
    released: bool = False
    #: The peer closed before its A-ASSOCIATE-RQ: a probe, never audited as no-association-request.
    left_unasked: bool = False


def peer_has_closed(request: Any) -> bool:
    """Whether the peer of an accepted, not yet wrapped socket has closed its end (EOF or reset), without reading anything."""
    try:
        if request.fileno() < 0:  # closed here, or detached into a TLS socket that its thread serves
            return False
        # A socket with a timeout waits that long in recv() even with MSG_DONTWAIT: ask select first.
        readable, _, _ = select.select([request], [], [], 0)
        if not readable:
            return False
        return bool(request.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
    except (BlockingIOError, InterruptedError, TimeoutError, ValueError):
        return False
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return True
    except OSError:
        return False


class LimitedAssociationServer(QuietAssociationServer):
    """pynetdicom's threaded server (without its idle garbage collections) with per-address accounting at accept and at association.

    A connection is tracked by its file descriptor from accept to the end of its association
    (a TLS wrapper keeps the descriptor), and by its ``Association`` once that exists.
    """

    limits: Limits
    accounting: PeerAccounting
    report_refusal: Reporter
    report_violation: Reporter | None
    report_idle: Reporter | None

    def setup_limits(self, limits: Limits, report_refusal: Reporter, report_violation: Reporter | None) -> None:
        """Apply ``limits``; connection refusals go to ``report_refusal`` (throttled), violations to ``report_violation``."""
        self.limits = limits
        self.accounting = PeerAccounting(limits)
        self.report_refusal = RefusalThrottle(report_refusal)
        self.report_violation = report_violation
        # An association dropped for idleness is routine for some senders: reported, but throttled.
        self.report_idle = RefusalThrottle(report_violation) if report_violation is not None else None
        self._slots: dict[int, _Slot] = {}
        self._by_assoc: dict[int, _Slot] = {}
        self._slots_lock = threading.Lock()
        self.daemon_threads = True
        self.listen_backlog(limits.accept_backlog)

    def listen_backlog(self, backlog: int) -> None:
        """Queue up to ``backlog`` connections in the kernel before they are accepted.

        socketserver listens with a backlog of 5, already at construction: a burst of senders
        (a PACS opening many associations at once) would find connections refused or delayed
        while the acceptor catches up. Listening again on the listening socket updates its
        backlog (Linux, BSD); the kernel caps it at ``net.core.somaxconn``.
        """
        self.request_queue_size = backlog
        listening: socket.socket = self.socket  # type: ignore[assignment] # socketserver's listening socket, set at construction
        listening.listen(backlog)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse a connection over the pending caps before it gets a thread."""
        address = str(client_address[0])
        reason = self.accounting.open_connection(address)
        if reason is not None and self._release_closed_pending():
            reason = self.accounting.open_connection(address)
        if reason is not None:
            self.report_refusal(address, reason, {"limit": "pending"})
            return False
        with self._slots_lock:
            self._slots[request.fileno()] = _Slot(address, request=request)
        return True

    def _release_closed_pending(self) -> int:
        """Give back the places of pending connections whose peer has already closed; how many.

        A port probe connects and leaves at once; its own thread frees its place as soon as it
        sees the close, but that thread may not have run yet when the next connection from the
        same address is accepted, so at a cap the accept loop looks for itself (a non-blocking
        peek at each pending socket, reading nothing).
        """
        with self._slots_lock:
            pending = [(key, slot) for key, slot in self._slots.items() if not slot.requested and not slot.released]
        released = 0
        for key, slot in pending:
            if peer_has_closed(slot.request):
                slot.left_unasked = True
                self._release(key, slot)
                released += 1
        return released

    def bind_slot(self, request: Any, assoc: Any) -> None:
        """Attach the connection's slot to its association."""
        with self._slots_lock:
            slot = self._slots.get(request.fileno())
            if slot is not None:
                slot.assoc = assoc
                self._by_assoc[id(assoc)] = slot

    def slot_assoc(self, request: Any) -> Any:
        """The association serving ``request``, if any."""
        with self._slots_lock:
            slot = self._slots.get(request.fileno())
        return None if slot is None else slot.assoc

    def admit_association(self, assoc: Any) -> str | None:
        """At the A-ASSOCIATE-RQ: count the association; the refusal reason when over a cap."""
        with self._slots_lock:
            slot = self._by_assoc.get(id(assoc))
        if slot is None:
            return None
        slot.requested = True
        reason = self.accounting.admit(slot.address)
        slot.admitted = reason is None
        return reason

    def connection_release(self, request: Any) -> Callable[[], None]:
        """A function releasing what ``request`` counted, for a subclass that drops it before serving (a failed TLS handshake)."""
        key, slot = self._slot_of(request)
        return lambda: self._release(key, slot)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve the connection to its end, then release what it counted; one that never asked is reported."""
        key, slot = self._slot_of(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(key, slot)

    def shutdown_request(self, request: Any) -> None:
        """A connection closed before its association existed (e.g. a failed TLS handshake) is released too."""
        key, slot = self._slot_of(request)
        super().shutdown_request(request)
        if slot is not None and slot.assoc is None:
            self._release(key, slot)

    def _slot_of(self, request: Any) -> tuple[int, _Slot | None]:
        try:
            key = int(request.fileno())
        except OSError:
            return -1, None
        with self._slots_lock:
            return key, self._slots.get(key)

    def _release(self, key: int, slot: _Slot | None) -> None:
        """Forget ``slot`` once; the descriptor may already serve a new connection with a slot of its own."""
        if slot is None:
            return
        with self._slots_lock:
            if slot.released:
                return
            slot.released = True
            if self._slots.get(key) is slot:
                del self._slots[key]
            if slot.assoc is not None:
                self._by_assoc.pop(id(slot.assoc), None)
        self.accounting.close(slot.address, admitted=slot.admitted, requested=slot.requested)
        # Dropped by the ARTIM timer, not a port probe that connected and left (health checks).
        sock = getattr(getattr(slot.assoc, "dul", None), "socket", None)
        probe = slot.left_unasked or (isinstance(sock, GuardedSocket) and sock.left_unasked)
        if not slot.requested and not probe and time.monotonic() - slot.opened >= 0.9 * self.limits.acse_timeout:
            self.report_refusal(slot.address, "no-association-request", {"limit": "acse_timeout"})


def start_limited_server(
    ae: Any,
    address: tuple[str, int],
    evt_handlers: list[Any],
    limits: Limits,
    *,
    contexts: list[Any] | None = None,
    report_refusal: Reporter,
    report_violation: Reporter,
) -> LimitedAssociationServer:
    """Start a listener for ``ae`` on ``address`` with ``limits``, in a daemon thread (as ``AE.start_server`` does).

    ``contexts``: the supported presentation contexts (the AE's when None).
    """
    server: LimitedAssociationServer = ae.make_server(
        address, contexts=contexts, evt_handlers=evt_handlers, server_class=LimitedAssociationServer, request_handler=LimitedRequestHandler
    )
    server.setup_limits(limits, report_refusal, report_violation)
    thread = threading.Thread(target=server.serve_forever, name="dicom-acceptor", daemon=True)
    thread.start()
    # AE.start_server keeps its servers here, and the server's shutdown() removes itself again.
    ae._servers.append(server)  # noqa: SLF001 - the list AE.start_server itself appends to
    return server


def limit_refusal(assoc: Any) -> str | None:
    """At the A-ASSOCIATE-RQ, count the association on its listener; the refusal reason when over a cap."""
    server = getattr(assoc, "_server", None)
    if isinstance(server, LimitedAssociationServer):
        return server.admit_association(assoc)
    return None
