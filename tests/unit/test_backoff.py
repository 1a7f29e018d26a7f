"""The one backoff function: jittered for forwarding, un-jittered for the confirmation schedules."""

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from guard.domain.retry import backoff_delay, backoff_schedule
from guard.services.confirm.confirmer import exponential

attempts = st.integers(min_value=-3, max_value=200)
bases = st.floats(min_value=0.01, max_value=100.0)
caps = st.floats(min_value=0.01, max_value=10_000.0)
units = st.floats(min_value=0.0, max_value=1.0)


@given(attempts, bases, caps, units)
def test_delay_is_between_half_and_all_of_the_capped_exponential(attempt: int, base: float, cap: float, unit: float) -> None:
    """Every delay lies in [d/2, d], d = min(cap, base * 2^(attempt-1)), attempts below 1 counting as 1."""
    full = min(cap, base * 2 ** min(max(attempt - 1, 0), 30))
    delay = backoff_delay(attempt, base, cap, unit)
    assert full / 2 - 1e-9 <= delay <= full + 1e-9


@given(st.integers(min_value=1, max_value=100), bases, caps, units)
def test_delay_never_shrinks_from_one_attempt_to_the_next(attempt: int, base: float, cap: float, unit: float) -> None:
    """With the same jitter, a later attempt never waits less than an earlier one."""
    assert backoff_delay(attempt, base, cap, unit) <= backoff_delay(attempt + 1, base, cap, unit)


@given(attempts, bases, caps)
def test_the_schedule_is_the_unjittered_delay(attempt: int, base: float, cap: float) -> None:
    """The confirmation schedule is ``backoff_delay`` at its full value, so it is predictable."""
    expected = timedelta(seconds=backoff_delay(attempt, base, cap, 1.0))
    assert expected == backoff_schedule(base, cap)(attempt)
    assert expected == exponential(base, cap)(attempt)


def test_the_schedule_doubles_until_the_cap() -> None:
    """1, 2, 4, 8 s then the cap: what the confirmer waited before the one function."""
    schedule = backoff_schedule(1.0, 10.0)
    assert [schedule(a).total_seconds() for a in range(7)] == [1.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
