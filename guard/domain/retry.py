"""The retry policy: a pure function from a failure and its history to the next step.

``backoff_delay`` is the one place a retry delay is computed: forwarding (with jitter),
confirmation and commitment reports towards sources (without, so their schedule is predictable).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Parameters of the policy (from ``[forward]``)."""

    max_attempts: int
    max_age: timedelta
    backoff_base: float
    backoff_max: float


@dataclass(frozen=True)
class RetryDecision:
    """Either retry at ``retry_at`` or dead-letter with ``reason``."""

    dead_letter: bool
    retry_at: datetime | None
    reason: str


def backoff_delay(attempt: int, base: float, cap: float, unit_random: float = 1.0) -> float:
    """Exponential backoff with "equal jitter": half the delay fixed, half random.

    ``attempt`` counts from 1; ``unit_random`` is in [0, 1], and 1.0 (the default) is the
    un-jittered delay ``min(cap, base * 2 ** (attempt - 1))``. The delay never exceeds ``cap``
    and never falls below half of the un-jittered delay, so retries neither stampede nor stall.
    """
    exponent = min(max(attempt - 1, 0), 30)
    delay = min(cap, base * (2**exponent))
    return float(delay / 2 + (delay / 2) * unit_random)


def backoff_schedule(base: float, cap: float) -> Callable[[int], timedelta]:
    """The un-jittered ``backoff_delay`` per attempt, as a ``timedelta`` (the ledger's confirmation schedule)."""
    return lambda attempt: timedelta(seconds=backoff_delay(attempt, base, cap))


def decide_retry(
    policy: RetryPolicy,
    *,
    permanent: bool,
    unreachable: bool = False,
    error: str,
    attempts: int,
    received_at: datetime,
    now: datetime,
    unit_random: float | None = None,
) -> RetryDecision:
    """Decide what happens to an instance whose forwarding attempt number ``attempts`` failed."""
    if permanent:
        return RetryDecision(dead_letter=True, retry_at=None, reason=f"permanent failure: {error}")
    # An unreachable archive says nothing about the instance: only age ends those retries,
    # so an archive outage of a few hours does not dead-letter everything received meanwhile.
    if attempts >= policy.max_attempts and not unreachable:
        return RetryDecision(dead_letter=True, retry_at=None, reason=f"gave up after {attempts} attempts: {error}")
    if now - received_at >= policy.max_age:
        return RetryDecision(dead_letter=True, retry_at=None, reason=f"still failing after {policy.max_age}: {error}")
    jitter = random.random() if unit_random is None else unit_random  # noqa: S311 - jitter, not cryptography
    delay = backoff_delay(attempts, policy.backoff_base, policy.backoff_max, jitter)
    return RetryDecision(dead_letter=False, retry_at=now + timedelta(seconds=delay), reason=error)
