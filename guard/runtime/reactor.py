"""pynetdicom's two reactor threads per association, woken by events instead of polling every millisecond.

pynetdicom runs two loops for every association: the DUL reactor (reads PDUs from the socket,
drives the upper-layer state machine, sends what the association queued) and the association
reactor (takes complete DIMSE messages, release and abort requests). Both sleep 1 ms whenever
they find nothing to do, so every open association wakes 2,000 times a second whether or not a
byte moves. In the guard's process those wake-ups compete for the interpreter lock with the
threads that receive, fsync and forward; the profile of a 200-instance send put about a quarter
of all the guard's samples in the two loops themselves (docs/benchmark.md).

``install()`` replaces the waits, and only the waits:

- The DUL reactor, when its last pass found nothing, blocks in ``select`` on the association's
  socket and a wake-up pipe. Anything put on its queues from another thread (a PDU to send, an
  event, ``kill_dul``) writes one byte to the pipe. The wait is bounded by the ARTIM timer and
  by ``MAX_WAIT``.
- The association reactor blocks on a ``threading.Event`` that is set when the DUL hands it
  something: a complete DIMSE message, an ACSE primitive (release, abort), the DUL thread's end,
  or ``kill``. The wait is bounded by the network idle timer and by ``MAX_WAIT``.

What each pass does once awake is pynetdicom's own code, in pynetdicom's order (the loop bodies
below follow pynetdicom 3.0.4 line for line, with one check added for pausing: see
``_assoc_run_reactor``), so the state machine, timers, pausing for
``send_*`` calls and abort handling behave as before. ``MAX_WAIT`` is a safety net: a wake-up
this module does not know of is seen within it, never lost.

The change applies to every association in the process, inbound and outbound. It is installed
only on the pynetdicom release it was written against (``PYNETDICOM_VERSION``, the version pinned
in ``pyproject.toml``); on any other release the guard keeps pynetdicom's polling and logs
``reactor.polling`` once, and a test fails, so an upgrade is reviewed against the new loops.
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import pynetdicom
import structlog
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, A_RELEASE

log = structlog.get_logger("guard.runtime.reactor")

#: The pynetdicom release whose reactor loops are reproduced here.
PYNETDICOM_VERSION = "3.0.4"

#: Longest wait of either loop with nothing to do, seconds (a safety net, see the module docstring).
MAX_WAIT = 0.25

_installed = False
_install_lock = threading.Lock()


class _RingingQueue(queue.Queue[Any]):
    """A queue that calls ``ring`` after every ``put``: the consumer's wake-up."""

    def __init__(self, ring: Callable[[], None]) -> None:
        super().__init__()
        self._ring = ring

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:  # noqa: FBT001, FBT002 - queue.Queue.put
        """Put ``item`` (as ``queue.Queue``), then wake the consumer."""
        super().put(item, block, timeout)
        self._ring()


class _Doorbell:
    """Wakes a thread blocked in ``select``: a pipe written only while that thread waits.

    The pipe is opened by the waiting thread itself (``open``, when its loop starts) and closed
    when the loop ends, so a DUL that never runs holds no descriptors. A ring before ``open`` or
    after ``close`` does nothing; a closed descriptor is never written (its number may have been
    given to another file by then).
    """

    def __init__(self) -> None:
        self._read = self._write = -1
        self._lock = threading.Lock()
        self._closed = False
        #: True while the owning thread is about to wait or waiting; only then is a ring written.
        self.waiting = False

    def open(self) -> None:
        """Create the pipe (in the thread that will wait on it)."""
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        with self._lock:
            self._read, self._write = read, write

    @property
    def fileno(self) -> int:
        """The end to select on."""
        return self._read

    def ring(self) -> None:
        """Wake the waiting thread (no-op when it is not waiting, before ``open`` or after ``close``)."""
        if not self.waiting:
            return
        with self._lock:
            if self._closed or self._write < 0:
                return
            try:
                os.write(self._write, b"\0")
            except BlockingIOError:
                return  # the pipe is full: the thread is woken already

    def drain(self) -> None:
        """Empty the pipe after a wake-up."""
        with self._lock:
            if self._closed or self._read < 0:
                return
            try:
                while os.read(self._read, 4096):
                    pass
            except BlockingIOError:
                return

    def close(self) -> None:
        """Close both ends; later rings do nothing (the descriptors are never written once closed)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._read >= 0:
                os.close(self._read)
                os.close(self._write)


def _dul_doorbell(dul: DULServiceProvider) -> _Doorbell:
    bell: _Doorbell = dul.__dict__["_guard_doorbell"]
    return bell


def _assoc_event(assoc: Association) -> threading.Event:
    event: threading.Event = assoc.__dict__["_guard_wake"]
    return event


def _wake_assoc(dul: DULServiceProvider) -> None:
    _assoc_event(dul.assoc).set()


_original_dul_init = DULServiceProvider.__init__
_original_dimse_init = DIMSEServiceProvider.__init__
_original_assoc_init = Association.__init__
_original_kill_dul = DULServiceProvider.kill_dul
_original_stop_dul = DULServiceProvider.stop_dul
_original_assoc_kill = Association.kill
_original_serve_request = Association._serve_request  # noqa: SLF001 - the method this module wraps
_serving_elsewhere = threading.local()


def _ringing(empty: queue.Queue[Any], ring: Callable[[], None]) -> None:
    """Make a queue pynetdicom has just built (still empty) a ``_RingingQueue`` that calls ``ring``.

    The queue is changed in place rather than replaced: a new queue each would be four more queues
    (twelve conditions) built for every association and thrown away.
    """
    empty.__class__ = _RingingQueue
    empty.__dict__["_ring"] = ring


def _dul_init(self: DULServiceProvider, assoc: Association) -> None:
    _original_dul_init(self, assoc)
    bell = _Doorbell()
    self.__dict__["_guard_doorbell"] = bell
    _ringing(self.event_queue, bell.ring)
    _ringing(self.to_provider_queue, bell.ring)
    _ringing(self.to_user_queue, lambda: _wake_assoc(self))


def _dimse_init(self: DIMSEServiceProvider, assoc: Association) -> None:
    _original_dimse_init(self, assoc)
    _ringing(self.msg_queue, lambda: _assoc_event(assoc).set())


def _assoc_init(self: Association, *args: Any, **kwargs: Any) -> None:
    # The event exists before the DUL and DIMSE providers that set it are built.
    self.__dict__["_guard_wake"] = threading.Event()
    _original_assoc_init(self, *args, **kwargs)


def _kill_dul(self: DULServiceProvider) -> None:
    _original_kill_dul(self)
    _dul_doorbell(self).ring()


def _stop_dul(self: DULServiceProvider) -> bool:
    """The ``stop_dul`` of pynetdicom (stop the reactor in ``Sta1``), waking the reactor so that it stops at once."""
    if self.state_machine.current_state != "Sta1":
        return False
    self._kill_thread = True
    _dul_doorbell(self).ring()
    while self.is_alive():
        time.sleep(self._run_loop_delay)
    return True


def _serve_request(self: Association, msg: Any, context_id: int) -> None:
    """Pynetdicom's ``_serve_request``; on a thread of its own, it leaves the reactor's pause flag alone.

    pynetdicom serves an N-EVENT-REPORT request on a new thread, and ``_serve_request`` sets
    ``_is_paused`` to True and then False around the handler, whatever the reactor is doing.
    pynetdicom's reactor sets the flag again within a millisecond; a reactor that waits for
    events would leave it False, and a ``release()`` or ``send_*`` waiting for the pause would
    wait for ever. On that thread the writes are ignored (``_get_paused`` / ``_set_paused``).
    """
    if threading.current_thread() is self:
        _original_serve_request(self, msg, context_id)
        return
    _serving_elsewhere.active = True
    try:
        _original_serve_request(self, msg, context_id)
    finally:
        _serving_elsewhere.active = False


def _get_paused(self: Association) -> bool:
    return bool(self.__dict__.get("_guard_paused", False))


def _set_paused(self: Association, value: bool) -> None:  # noqa: FBT001 - the attribute pynetdicom assigns
    if getattr(_serving_elsewhere, "active", False):
        return
    self.__dict__["_guard_paused"] = value


def _assoc_kill(self: Association) -> None:
    _assoc_event(self).set()
    _original_assoc_kill(self)


def _socket_fd(dul: DULServiceProvider) -> int | None:
    """The association socket's descriptor, or None before it is connected or once it is closed."""
    assoc_socket = dul.socket
    sock = getattr(assoc_socket, "socket", None) if assoc_socket is not None else None
    if sock is None or not getattr(assoc_socket, "_is_connected", False):
        return None
    try:
        fd = int(sock.fileno())
    except (OSError, ValueError):
        return None
    return fd if fd >= 0 else None


def _dul_wait(dul: DULServiceProvider) -> None:
    """Block until the socket is readable, something was queued, the ARTIM timer runs out or ``MAX_WAIT``."""
    bell = _dul_doorbell(dul)
    bell.waiting = True
    try:
        # Queued before ``waiting`` was seen by the producer: do not wait for a ring that never comes.
        if dul._kill_thread or not dul.to_provider_queue.empty() or not dul.event_queue.empty():  # noqa: SLF001
            return
        timeout = MAX_WAIT
        artim = dul.artim_timer
        if artim._start_time is not None and artim._end_time is None and artim.timeout is not None:  # noqa: SLF001
            timeout = max(0.0, min(timeout, artim.remaining))
        fds = [bell.fileno]
        fd = _socket_fd(dul)
        if fd is not None:
            fds.append(fd)
        try:
            select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            # The socket was closed under us: pynetdicom's own checks below see it and say so.
            time.sleep(dul._run_loop_delay)  # noqa: SLF001
    finally:
        bell.waiting = False
        bell.drain()


def _abort_after_error(dul: DULServiceProvider) -> None:
    """What pynetdicom's DUL reactor does on an unexpected error: A-ABORT straight to the peer, then stop both loops."""
    pynetdicom.dul.LOGGER.exception("Exception in DUL.run(), aborting association")
    abort_pdu = A_ABORT_RQ()
    abort_pdu.source = 0x02
    abort_pdu.reason_diagnostic = 0x00
    if dul.socket is not None:
        dul.socket.send(abort_pdu.encode())
    dul.assoc.is_aborted = True
    dul.assoc.is_established = False
    dul.assoc._kill = True  # noqa: SLF001
    dul._kill_thread = True  # noqa: SLF001


def _dul_run_reactor(self: DULServiceProvider) -> None:
    """The ``DULServiceProvider.run_reactor`` of pynetdicom 3.0.4, with ``_dul_wait`` for its 1 ms sleep."""
    _dul_doorbell(self).open()
    try:
        self._idle_timer.start()
        sleep = False
        while True:
            if not self.assoc._dul_ready.is_set():  # noqa: SLF001
                self.assoc._dul_ready.set()  # noqa: SLF001
                sleep = True
            if sleep:
                _dul_wait(self)
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:  # noqa: BLE001 - pynetdicom's own boundary, reproduced: abort the association
                _abort_after_error(self)
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            self.state_machine.do_action(event)
            sleep = False
    finally:
        # The association reactor checks ``dul.is_alive()``: wake it to see the end at once.
        _assoc_event(self.assoc).set()
        _dul_doorbell(self).close()


def _assoc_wait(assoc: Association) -> None:
    """Block until the DUL hands over something, the association is killed, the idle timer runs out or ``MAX_WAIT``."""
    wake = _assoc_event(assoc)
    timeout = MAX_WAIT
    idle = assoc.dul._idle_timer  # noqa: SLF001
    if idle.timeout is not None and idle._start_time is not None:  # noqa: SLF001
        timeout = max(0.0, min(timeout, idle.remaining))
    wake.wait(timeout)
    wake.clear()


def _assoc_has_work(assoc: Association) -> bool:
    """Whether a pass would act now (checked before waiting: a wake-up may have been cleared by the last pass).

    Only what the pass itself takes counts: a primitive the pass leaves on the DUL's queue
    (taken by a ``release()`` or ``send_*`` call in another thread) must not keep it from waiting.
    """
    if assoc._kill or not assoc.dimse.msg_queue.empty():  # noqa: SLF001
        return True
    head = assoc.dul.peek_next_pdu()
    if isinstance(head, (A_ABORT, A_P_ABORT)):
        return True
    if assoc.is_established and isinstance(head, A_RELEASE) and head.result is None:
        return True
    return not assoc.dul.is_alive() or assoc.dul.idle_timer_expired()


def _through_checkpoint(assoc: Association) -> bool:
    """Wait for work and at the pause checkpoint, paused meanwhile; whether the pass may go on.

    False when the reactor was paused after the checkpoint wait returned and before the flag
    fell: the caller may have read the flag still True and be awaiting its response now, so the
    pass takes nothing off the DIMSE queue and goes back to wait at the checkpoint.
    """
    assoc._is_paused = True  # noqa: SLF001
    if not _assoc_has_work(assoc):
        _assoc_wait(assoc)
    assoc._reactor_checkpoint.wait()  # noqa: SLF001
    assoc._is_paused = False  # noqa: SLF001
    return assoc._reactor_checkpoint.is_set()  # noqa: SLF001


def _assoc_run_reactor(self: Association) -> None:
    """The ``Association._run_reactor`` of pynetdicom 3.0.4, with ``_assoc_wait`` for its 1 ms sleep.

    The reactor counts as paused (``_is_paused``) while it waits, as it does while it sleeps in
    pynetdicom, so a ``send_*`` call from another thread does not wait for it to wake.

    One check is the guard's own: after the flag falls, the checkpoint is
    looked at again. pynetdicom's loop has a window between its checkpoint wait returning and the
    flag falling in which a ``send_*`` caller can clear the checkpoint, read the stale True and
    go on; the reactor then takes the caller's response off the DIMSE queue, drops it as an
    unexpected message, and the caller waits out the DIMSE timeout and aborts. Under load that
    window is as long as the thread waits for the interpreter lock.
    """
    self._is_paused = False
    while not self._kill:
        if not _through_checkpoint(self):
            continue

        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            self._serve_request(msg, int(context_id))  # type: ignore[arg-type]

        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            pynetdicom.association.LOGGER.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return

        if self.acse.is_aborted():
            log_msg = "Association Aborted"
            if self.acse.is_aborted("a-p-abort"):
                log_msg += " (A-P-ABORT)"
            pynetdicom.association.LOGGER.info(log_msg)
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return

        if not self.dul.is_alive():
            self.kill()
            return

        if self.dul.idle_timer_expired():
            pynetdicom.association.LOGGER.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return


def installed() -> bool:
    """Whether the event-driven loops are in place."""
    return _installed


def install() -> bool:
    """Put the event-driven loops in place (once per process); whether they are in place.

    Associations created before the call keep polling. On a pynetdicom release other than
    ``PYNETDICOM_VERSION`` nothing is changed.
    """
    global _installed  # noqa: PLW0603 - one process-wide switch, set once
    with _install_lock:
        if _installed:
            return True
        if pynetdicom.__version__ != PYNETDICOM_VERSION:
            log.warning("reactor.polling", action="reactor.polling", pynetdicom=pynetdicom.__version__, expected=PYNETDICOM_VERSION)
            return False
        Association.__init__ = _assoc_init  # type: ignore[method-assign]
        DULServiceProvider.__init__ = _dul_init  # type: ignore[method-assign]
        DIMSEServiceProvider.__init__ = _dimse_init  # type: ignore[method-assign]
        DULServiceProvider.kill_dul = _kill_dul  # type: ignore[method-assign]
        DULServiceProvider.stop_dul = _stop_dul  # type: ignore[method-assign]
        DULServiceProvider.run_reactor = _dul_run_reactor  # type: ignore[method-assign]
        Association.kill = _assoc_kill  # type: ignore[method-assign]
        Association._run_reactor = _assoc_run_reactor  # type: ignore[method-assign]  # noqa: SLF001
        Association._serve_request = _serve_request  # type: ignore[method-assign]  # noqa: SLF001
        Association._is_paused = property(_get_paused, _set_paused)  # type: ignore[assignment]  # noqa: SLF001
        _installed = True
        return True
