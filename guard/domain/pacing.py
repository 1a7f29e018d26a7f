"""How long an idle loop waits before it looks for work again.

A loop that polls the ledger at a fixed short interval costs CPU all day on a guard that has
nothing to do. A loop idle for ``t`` seconds instead looks again within ``t / 4``: at its
configured interval right after work, stretching to ``IDLE_WAIT_MAX`` over a quiet minute.
Work that arrives by a wake-up (a received instance) is taken at once whatever the wait; work
that only the ledger knows of (a retry coming due, an expired lease) is seen at most a quarter
of the quiet time late.
"""

from __future__ import annotations

#: The longest wait of an idle loop, seconds (unless its configured interval is longer).
IDLE_WAIT_MAX = 5.0


def idle_wait(interval: float, idle_for: float, longest: float = IDLE_WAIT_MAX) -> float:
    """Seconds to wait: ``interval`` after work, ``idle_for / 4`` when quiet, never more than ``max(interval, longest)``."""
    return min(max(interval, idle_for / 4), max(interval, longest))
