"""``guard.app.start.handle_signals``: a signal never runs the stop inside its handler, where it could deadlock."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from guard.app.start import handle_signals

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@pytest.fixture
def restored_handlers() -> Iterator[None]:
    """The test process's own handlers back after the test."""
    saved = {number: signal.getsignal(number) for number in SIGNALS}
    try:
        yield
    finally:
        for number, previous in saved.items():
            signal.signal(number, previous)


@pytest.mark.usefixtures("restored_handlers")
def test_a_sigterm_while_the_stop_events_lock_is_held_returns_at_once_and_still_stops() -> None:
    """The handler returns while the lock of the Event it stops is held, as the main thread holds it inside ``wait``.

    A handler that called ``Event.set`` itself blocked on that lock: in the main thread, for ever.
    """
    stop, reload = threading.Event(), threading.Event()
    handle_signals(stop.set, reload.set)
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    with stop._cond:  # the lock Event.wait holds around its waits, held here as the main thread would
        call = threading.Thread(target=handler, args=(signal.SIGTERM, None), daemon=True)
        call.start()
        call.join(5)
        assert not call.is_alive(), "the signal handler waited for the lock its thread held"
        assert not stop.is_set()
    assert stop.wait(5), "SIGTERM did not stop once the lock was free"
    assert not reload.is_set()


@pytest.mark.usefixtures("restored_handlers")
def test_real_signals_reach_stop_and_reload() -> None:
    """SIGHUP reloads and SIGTERM stops, sent to this process."""
    stop, reload = threading.Event(), threading.Event()
    handle_signals(stop.set, reload.set)
    signal.raise_signal(signal.SIGHUP)
    assert reload.wait(5)
    assert not stop.is_set()
    signal.raise_signal(signal.SIGTERM)
    assert stop.wait(5)
