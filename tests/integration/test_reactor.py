"""The association threads wait for events (``guard.runtime.reactor``): real associations on loopback.

pynetdicom's own loops pass every millisecond, about 1,000 times a second per thread; these
tests count the passes of the replacement loops while an association sits idle, and check that
work arriving on an idle association (a C-ECHO, a release, an abort, an N-EVENT-REPORT served on
its own thread) is still taken at once and ends the threads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from guard.runtime import reactor
from tests.support.waiting import wait_until

#: An idle second may see a few passes per loop (``MAX_WAIT`` bounds each wait); pynetdicom's
#: own loops pass about a thousand times.
_IDLE_PASSES_PER_SECOND = 40
#: Seconds of idle time whose passes are counted.
_IDLE_WINDOW = 1.0


@pytest.fixture
def echo_server() -> Iterator[Any]:
    """A pynetdicom Verification SCP on a free loopback port."""
    ae = AE(ae_title="ECHOSCP")
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        yield server
    finally:
        server.shutdown()


def _associate(server: Any) -> Association:
    """An association with ``server``, returned once both ends have it established."""
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", int(server.server_address[1]))
    assert assoc.is_established
    wait_until(lambda: any(a.is_established for a in server.active_associations), 5, message="the acceptor never established it")
    return assoc


class _PassCounter:
    """Counts the waits of both loops (one per pass that found nothing to do), per thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: dict[int, int] = {}
        self._lock = threading.Lock()
        for name in ("_dul_wait", "_assoc_wait"):
            monkeypatch.setattr(reactor, name, self._counting(getattr(reactor, name)))

    def _counting(self, wait: Callable[[Any], None]) -> Callable[[Any], None]:
        def counted(owner: Any) -> None:
            with self._lock:
                ident = threading.get_ident()
                self.counts[ident] = self.counts.get(ident, 0) + 1
            wait(owner)

        return counted

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


def test_the_event_driven_loops_are_installed_on_the_pinned_pynetdicom() -> None:
    """The guard's processes install the loops (``configure_dicom``); an upgrade of pynetdicom fails here, to be reviewed."""
    assert pynetdicom.__version__ == reactor.PYNETDICOM_VERSION
    assert reactor.install()
    assert reactor.installed()
    assert Association._run_reactor is reactor._assoc_run_reactor


def test_an_idle_association_waits_instead_of_polling(echo_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ends of an idle association (four threads) pass a few times a second, and a C-ECHO after the idle time is answered."""
    reactor.install()
    counter = _PassCounter(monkeypatch)
    assoc = _associate(echo_server)
    try:
        before, started = counter.total(), time.monotonic()
        time.sleep(_IDLE_WINDOW)  # the interval measured, not a wait for readiness
        passes, elapsed = counter.total() - before, time.monotonic() - started
        threads = 4
        assert passes > 0, "the event-driven loops are not the ones running"
        assert passes <= _IDLE_PASSES_PER_SECOND * threads * elapsed, f"{passes} idle passes in {elapsed:.2f} s"
        status = assoc.send_c_echo()
        assert int(status.Status) == 0x0000
    finally:
        assoc.release()
    assert not assoc.is_established


def test_release_and_abort_end_both_threads_of_each_end(echo_server: Any) -> None:
    """A release and an abort on an idle association end the association and DUL threads at once (bounded wait)."""
    reactor.install()
    for end in ("release", "abort"):
        assoc = _associate(echo_server)
        getattr(assoc, end)()
        assoc.join(5)
        assoc.dul.join(5)
        assert not assoc.is_alive(), end
        assert not assoc.dul.is_alive(), end
        wait_until(lambda: not echo_server.active_associations, 5, message=f"the acceptor's threads outlived the {end}")


def test_a_report_served_on_its_own_thread_leaves_the_pause_flag_to_the_reactor() -> None:
    """Pynetdicom serves an N-EVENT-REPORT on a thread of its own; that thread's writes of ``_is_paused`` are ignored."""
    reactor.install()
    ae = AE(ae_title="X")
    assoc = Association(ae, "requestor")
    assoc._is_paused = True
    done = threading.Event()

    def serve_elsewhere() -> None:
        reactor._serving_elsewhere.active = True
        try:
            assoc._is_paused = False
        finally:
            reactor._serving_elsewhere.active = False
            done.set()

    threading.Thread(target=serve_elsewhere).start()
    assert done.wait(5)
    assert assoc._is_paused is True
    assoc._is_paused = False  # the reactor's own write (any thread not serving elsewhere)
    assert assoc._is_paused is False


def test_the_doorbell_writes_only_while_its_thread_waits_and_never_after_close() -> None:
    """A ring with nobody waiting writes nothing; after close a ring is a no-op, never a write to a reused descriptor."""
    bell = reactor._Doorbell()
    bell.ring()  # before open: nothing to write to
    bell.open()
    bell.ring()  # not waiting: nothing written
    with pytest.raises(BlockingIOError):
        os.read(bell.fileno, 1)
    bell.waiting = True
    bell.ring()
    assert os.read(bell.fileno, 16) == b"\0"
    bell.close()
    bell.ring()
    bell.drain()
    bell.close()


class _HeldCheckpoint(threading.Event):
    """An association reactor's ``_reactor_checkpoint`` that can hold the reactor just after its wait returns.

    The window it opens is the one the interpreter lock opens under load: the reactor has passed
    the checkpoint and not yet lowered ``_is_paused``.
    """

    def __init__(self, reactor_thread: threading.Thread) -> None:
        super().__init__()
        self.set()
        self._reactor_thread = reactor_thread
        self.armed = threading.Event()
        self.held = threading.Event()
        self.go = threading.Event()
        self.waited_again = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        mine = threading.current_thread() is self._reactor_thread
        if mine and self.go.is_set():
            self.waited_again.set()
        passed = super().wait(timeout)
        if mine and self.armed.is_set():
            self.armed.clear()
            self.held.set()
            self.go.wait(10)
        return passed


def test_a_pause_that_reads_a_stale_flag_keeps_its_response(echo_server: Any) -> None:
    """A ``send_*`` caller that pauses the reactor just after its checkpoint wait returned still gets its response.

    The caller clears the checkpoint and reads ``_is_paused`` still True, so it goes on, writes its
    request and awaits the response; the reactor must then leave the DIMSE queue alone. Without the
    second look at the checkpoint the reactor took the response and dropped it, and the caller
    waited out the DIMSE timeout and aborted (a C-MOVE relay's sub-operation, a forwarded instance
    sent again).
    """
    reactor.install()
    assoc = _associate(echo_server)
    checkpoint = _HeldCheckpoint(assoc)
    try:
        assoc._reactor_checkpoint = checkpoint
        checkpoint.armed.set()
        reactor._assoc_event(assoc).set()  # wake the reactor for a pass
        assert checkpoint.held.wait(10), "the reactor did not pass its checkpoint"
        checkpoint.clear()  # the caller pauses the reactor...
        assert assoc._is_paused is True  # ...and reads the flag the reactor has not lowered yet
        response = C_ECHO()
        response.MessageIDBeingRespondedTo = 1
        response.Status = 0x0000
        assoc.dimse.msg_queue.put((1, response))  # its response arrives
        checkpoint.go.set()
        assert checkpoint.waited_again.wait(10), "the reactor did not come back to its checkpoint"
        assert assoc.dimse.get_msg(block=False) == (1, response)
    finally:
        checkpoint.go.set()
        checkpoint.set()
        assoc.release()
    assert not assoc.is_established
