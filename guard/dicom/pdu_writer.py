"""C-STORE requests written straight to an established association's socket (ADR 0019).

pynetdicom's ``send_c_store`` turns every P-DATA-TF of a data set into a primitive, a hop
through the DUL thread's queue, a state machine event and a PDU object encoded again; for a
0.5 MB instance at 16 KiB PDUs that is about 32 of each, and most of the forwarding leg's CPU.
``DirectStore`` writes the same PDUs (``guard.dicom.pdata``: the command set, then the data set
read from the spool file in fragments, its bytes as they are) from the calling thread, and takes
the response through pynetdicom's own receive path, as ``send_c_store`` does.

What keeps that safe alongside the DUL thread, which also writes to the socket (an A-ABORT after
``assoc.abort()`` from another thread, a network timeout, an invalid PDU from the peer):

- ``attach`` gives the association one re-entrant lock and puts it around the three things the
  DUL thread does that touch the socket or the upper-layer state: ``AssociationSocket.send``,
  its ``_shutdown_socket`` (``close`` goes through it) and ``StateMachine.do_action``. These are
  instance attributes of that one association's objects: no other association, and no class, is
  changed. Each PDU is written whole while holding the lock; before each one, still holding it,
  the state must be Sta6 with nothing queued for the DUL to send, otherwise the message stops
  there (so no P-DATA follows an A-ABORT, and no other message's PDU comes between two of this
  one's: PS3.8 9.3.5). Writing P-DATA-TF does not change the state (PS3.8 9.2: DT-1 stays in Sta6),
  so the state machine stays valid without being told.
- The association reactor is paused while the request is written and its response awaited
  (``_reactor_checkpoint``, ``_is_paused``), as ``send_c_store`` pauses it, so the response is
  not taken off the DIMSE queue by the reactor.
- Every write waits for the socket at most the DIMSE timeout without progress (pynetdicom's own
  writes block for as long as the peer reads nothing); then the TCP connection is shut down, since
  part of a PDU may be out and nothing, not even an A-ABORT, can follow it. A socket error tells
  the DUL the connection is closed (Evt17, as pynetdicom's ``AssociationSocket.send`` does). Both
  raise ``OSError``: the caller aborts the association.

``attach`` returns None (the caller keeps ``send_c_store``) on another pynetdicom release than
the one these internals were read from, for a TLS socket (reading and writing one ``SSLSocket``
from two threads is not safe) or when the association has no open socket.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO

import pynetdicom
from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE

from guard.dicom.pdata import DataSetFrames, Part10Header, c_store_rq, command_pdus
from guard.runtime.reactor import PYNETDICOM_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable

    from pynetdicom.association import Association

#: The only upper-layer state in which P-DATA-TF may be sent (PS3.8 9.2, Data Transfer).
_DATA_TRANSFER = "Sta6"
#: Pause between two looks at the association reactor's pause flag, seconds (pynetdicom's own).
_PAUSE_POLL = 0.0001


class AssociationLostError(ConnectionError):
    """The association ended, or began to, before the whole request was written."""


def _locked(lock: threading.RLock, function: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return function(*args, **kwargs)

    return call


def attach(assoc: Association) -> DirectStore | None:
    """A ``DirectStore`` for the established association ``assoc``, or None when pynetdicom's own path must be used."""
    if pynetdicom.__version__ != PYNETDICOM_VERSION or not assoc.is_established:
        return None
    assoc_socket = assoc.dul.socket
    sock = getattr(assoc_socket, "socket", None)
    if assoc_socket is None or not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
        return None
    lock = threading.RLock()
    machine = assoc.dul.state_machine
    # Instance attributes: only this association's socket and state machine take the lock.
    assoc_socket.__dict__["send"] = _locked(lock, assoc_socket.send)
    assoc_socket.__dict__["_shutdown_socket"] = _locked(lock, assoc_socket._shutdown_socket)  # noqa: SLF001 - close() goes through it
    machine.__dict__["do_action"] = _locked(lock, machine.do_action)
    return DirectStore(assoc, sock, lock)


def writable(header: Part10Header) -> bool:
    """Whether the data set of a file with File Meta ``header`` can be written as it is: not deflated (pynetdicom inflates those)."""
    return not UID(header.transfer_syntax).is_deflated


class DirectStore:
    """Writes C-STORE requests to one association's socket; built by ``attach``."""

    def __init__(self, assoc: Association, sock: socket.socket, lock: threading.RLock) -> None:
        """Write to ``sock``, the socket of ``assoc``, holding ``lock`` for each PDU."""
        self.assoc = assoc
        self._sock = sock
        self._lock = lock

    @property
    def max_pdu_length(self) -> int:
        """The peer's maximum PDU length (0: no limit), as the association negotiated it."""
        return int(self.assoc.acceptor.maximum_length or 0)

    def store(
        self,
        source: BinaryIO,
        header: Part10Header,
        length: int,
        context_id: int,
        message_id: int,
        *,
        originator: tuple[str, int] | None = None,
    ) -> Dataset:
        """Send one C-STORE-RQ with the ``length`` data set bytes at ``source``'s position; its status, as ``send_c_store`` returns it.

        ``originator``: the Move Originator AE Title and Message ID of a C-MOVE sub-operation.

        An empty ``Dataset`` when no response came (DIMSE timeout, association lost), after
        pynetdicom's own handling of that (an abort on a timeout). ``OSError`` (and ``EOFError``
        for a file shorter than it said) when the request could not be written whole.
        """
        assoc = self.assoc
        timeout = assoc.dimse_timeout
        assoc._reactor_checkpoint.clear()  # noqa: SLF001 - pause the reactor as send_c_store does
        try:
            self._wait_until_paused(timeout)
            command = c_store_rq(message_id, header.sop_class_uid, header.sop_instance_uid, originator=originator)
            for pdu in command_pdus(command, context_id, self.max_pdu_length):
                self._write_pdu(pdu, timeout)
            for frame in DataSetFrames(context_id, self.max_pdu_length).frames(source, length):
                self._write_pdu(frame, timeout)
            _, response = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()  # noqa: SLF001
        if response is None:
            assoc._handle_no_response()  # noqa: SLF001 - pynetdicom's reaction, as send_c_store has it
            return Dataset()
        if not isinstance(response, C_STORE) or response.MessageIDBeingRespondedTo != message_id:
            pynetdicom.association.LOGGER.error("Received an invalid C-STORE response from the peer")
            assoc.abort()
            return Dataset()
        return assoc._check_received_status(response)  # noqa: SLF001

    def store_file(
        self, source: BinaryIO, header: Part10Header, context_id: int, message_id: int, *, originator: tuple[str, int] | None = None
    ) -> Dataset:
        """``store`` of the whole data set of the Part 10 file open at ``source``, whose File Meta is ``header``."""
        length = os.fstat(source.fileno()).st_size - header.dataset_offset
        source.seek(header.dataset_offset)
        return self.store(source, header, length, context_id, message_id, originator=originator)

    def _wait_until_paused(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.assoc._is_paused:  # noqa: SLF001
            if deadline is not None and time.monotonic() > deadline:
                msg = "the association reactor did not pause"
                raise TimeoutError(msg)
            time.sleep(_PAUSE_POLL)

    def _write_pdu(self, pdu: bytes | memoryview, timeout: float | None) -> None:
        """Write one whole PDU while holding the lock, if the association is still in data transfer."""
        dul = self.assoc.dul
        with self._lock:
            if dul.state_machine.current_state != _DATA_TRANSFER or not self.assoc.is_established or not dul.to_provider_queue.empty():
                msg = "the association ended or is ending"
                raise AssociationLostError(msg)
            try:
                self._write_all(memoryview(pdu), timeout)
            except TimeoutError:
                # Part of a PDU may be out: nothing more can follow it, not even an A-ABORT, and a peer
                # that reads nothing would hold the DUL's own blocking write for ever. Close the transport.
                self._shutdown()
                raise
            except (OSError, ValueError) as exc:
                dul.event_queue.put("Evt17")  # transport connection closed, as AssociationSocket.send reports it
                msg = f"writing to the peer failed: {exc}"
                raise AssociationLostError(msg) from exc

    def _shutdown(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return

    def _write_all(self, view: memoryview, timeout: float | None) -> None:
        """Write ``view`` without blocking the socket; ``TimeoutError`` after ``timeout`` seconds without progress."""
        while view:
            try:
                sent = self._sock.send(view, socket.MSG_DONTWAIT)
            except BlockingIOError:
                _, writable, _ = select.select([], [self._sock], [], timeout)
                if not writable:
                    msg = f"the peer took nothing for {timeout} s"
                    raise TimeoutError(msg) from None
                continue
            view = view[sent:]
