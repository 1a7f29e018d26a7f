"""How long an idle loop waits: its interval right after work, a quarter of the quiet time later, bounded; and its alarm."""

from __future__ import annotations

import threading
import time

from hypothesis import given
from hypothesis import strategies as st

from guard.domain.pacing import IDLE_WAIT_MAX, Alarm, idle_wait


def test_right_after_work_the_configured_interval() -> None:
    """A loop that has just worked looks again after its configured interval."""
    assert idle_wait(0.5, 0.0) == 0.5


def test_the_wait_stretches_with_the_quiet_time() -> None:
    """Idle for 8 s, a loop polling every 0.5 s waits 2 s; idle for an hour, the longest wait."""
    assert idle_wait(0.5, 8.0) == 2.0
    assert idle_wait(0.5, 3600.0) == IDLE_WAIT_MAX


def test_a_long_configured_interval_is_kept() -> None:
    """An interval longer than the longest idle wait is never shortened."""
    assert idle_wait(30.0, 0.0) == 30.0
    assert idle_wait(30.0, 3600.0) == 30.0


@given(st.floats(0.01, 100.0), st.floats(0.0, 1e6))
def test_bounds(interval: float, idle_for: float) -> None:
    """Never shorter than the interval, never longer than it or the longest wait, never past a quarter of the quiet time."""
    wait = idle_wait(interval, idle_for)
    assert interval <= wait <= max(interval, IDLE_WAIT_MAX)
    assert wait <= max(interval, idle_for / 4)


def test_an_alarm_not_rung_waits_until_the_time_given() -> None:
    """Nothing rang: ``wait`` returns False once its time has come."""
    until = time.monotonic() + 0.05
    assert Alarm().wait(until) is False
    assert time.monotonic() >= until


def test_rings_coalesce_into_the_earliest_and_wake_the_loop_once() -> None:
    """Rung for in a minute and for now: one wake-up, now; the later ring is not kept apart."""
    alarm = Alarm()
    alarm.ring_at(time.monotonic() + 60)
    alarm.ring()
    alarm.ring_at(time.monotonic() + 30)
    assert alarm.wait(time.monotonic() + 60) is True
    assert alarm.wait(time.monotonic() + 0.05) is False


def test_a_ring_for_a_time_wakes_the_loop_then_not_before() -> None:
    """Rung for a moment later, from another thread while the loop waits: the long wait ends then, not at its own end."""
    alarm = Alarm()
    rung_for: list[float] = []

    def ring_soon() -> None:
        rung_for.append(time.monotonic() + 0.1)
        alarm.ring_at(rung_for[0])

    ringer = threading.Timer(0.05, ring_soon)
    ringer.start()
    assert alarm.wait(time.monotonic() + 60) is True
    assert time.monotonic() >= rung_for[0]
    ringer.join()
