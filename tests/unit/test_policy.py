from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from guard.domain.retry import RetryPolicy, backoff_delay, decide_retry

POLICY = RetryPolicy(max_attempts=5, max_age=timedelta(hours=1), backoff_base=2.0, backoff_max=60.0)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@given(st.integers(min_value=1, max_value=100), st.floats(min_value=0, max_value=0.999999))
def test_backoff_stays_between_half_and_full_capped_delay(attempt: int, unit: float) -> None:
    """The jittered delay is within [d/2, d] where d = min(cap, base * 2^(attempt-1))."""
    full = min(60.0, 2.0 * 2 ** min(attempt - 1, 30))
    delay = backoff_delay(attempt, 2.0, 60.0, unit)
    assert full / 2 <= delay <= full


def test_backoff_grows_exponentially_until_the_cap() -> None:
    """Without jitter, each attempt doubles the delay until the cap."""
    delays = [backoff_delay(a, 2.0, 60.0, 0.0) for a in range(1, 8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_permanent_failure_is_dead_lettered_at_once() -> None:
    """A permanent failure does not wait for more attempts."""
    decision = decide_retry(POLICY, permanent=True, error="0xA900", attempts=1, received_at=T0, now=T0)
    assert decision.dead_letter
    assert "0xA900" in decision.reason


def test_transient_failure_is_retried_later() -> None:
    """A transient failure under the limits gets a retry time in the future."""
    decision = decide_retry(POLICY, permanent=False, error="0xA700", attempts=2, received_at=T0, now=T0, unit_random=0.5)
    assert not decision.dead_letter
    assert decision.retry_at == T0 + timedelta(seconds=3.0)


def test_too_many_attempts_dead_letters() -> None:
    """At max_attempts a transient failure is dead-lettered, and the reason says so."""
    decision = decide_retry(POLICY, permanent=False, error="0xA700", attempts=5, received_at=T0, now=T0)
    assert decision.dead_letter
    assert "5 attempts" in decision.reason


def test_unreachable_archive_only_ages_out() -> None:
    """An unreachable archive does not use up attempts; only max_age ends the retries."""
    many = decide_retry(POLICY, permanent=False, unreachable=True, error="refused", attempts=50, received_at=T0, now=T0)
    assert not many.dead_letter
    old = decide_retry(POLICY, permanent=False, unreachable=True, error="refused", attempts=2, received_at=T0, now=T0 + timedelta(hours=2))
    assert old.dead_letter


@given(
    st.booleans(),
    st.booleans(),
    st.integers(min_value=1, max_value=1000),
    st.integers(min_value=0, max_value=10_000),
)
def test_nothing_retries_forever(permanent: bool, unreachable: bool, attempts: int, age_minutes: int) -> None:
    """Every decision is either a dead letter or a retry strictly in the future, no later than the cap."""
    now = T0 + timedelta(minutes=age_minutes)
    d = decide_retry(POLICY, permanent=permanent, unreachable=unreachable, error="e", attempts=attempts, received_at=T0, now=now)
    if d.dead_letter:
        assert d.retry_at is None
    else:
        assert d.retry_at is not None
        assert now < d.retry_at <= now + timedelta(seconds=60)
        assert not permanent
        assert now - T0 < POLICY.max_age
