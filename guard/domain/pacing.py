"""How long an idle loop waits before it looks for work again.

A loop that polls the ledger at a fixed short interval costs CPU all day on a guard that has
nothing to do. A loop idle for ``t`` seconds instead looks again within ``t / 4``: at its
configured interval right after work, stretching to ``IDLE_WAIT_MAX`` over a quiet minute.
Work that arrives by a wake-up (a received instance) is taken at once whatever the wait; work
that only the ledger knows of (a retry coming due, an expired lease) is seen at most a quarter
of the quiet time late.

A loop that knows when its next piece of work becomes due (a study that has had nothing
forwarded for ``confirm.batch_wait``) waits until then instead, if that comes first: an
``Alarm`` is rung for a time (or at once), and several rings before the loop looks coalesce
into the earliest, so a burst of wake-ups costs one round, not one each.
"""

from __future__ import annotations

import math
import threading
import time

#: The longest wait of an idle loop, seconds (unless its configured interval is longer).
IDLE_WAIT_MAX = 5.0


def idle_wait(interval: float, idle_for: float, longest: float = IDLE_WAIT_MAX) -> float:
    """Seconds to wait: ``interval`` after work, ``idle_for / 4`` when quiet, never more than ``max(interval, longest)``."""
    return min(max(interval, idle_for / 4), max(interval, longest))


class Alarm:
    """A loop's wake-up, rung at once (``ring``) or for a time (``ring_at``, ``time.monotonic()`` seconds); thread-safe.

    Rings coalesce: the alarm keeps only the earliest time rung for, until a ``wait`` returns
    for it.
    """

    def __init__(self) -> None:
        """An alarm not rung."""
        self._changed = threading.Condition()
        self._at = math.inf

    def ring(self) -> None:
        """Wake the loop now (new work it must look at)."""
        self.ring_at(time.monotonic())

    def ring_at(self, when: float) -> None:
        """Wake the loop at ``when``, or earlier if it is rung for earlier."""
        with self._changed:
            if when < self._at:
                self._at = when
                self._changed.notify_all()

    def wait(self, until: float) -> bool:
        """Wait until ``until`` or the time the alarm is rung for, whichever comes first; whether the alarm rang (then it is reset)."""
        with self._changed:
            while True:
                now = time.monotonic()
                if self._at <= now:
                    self._at = math.inf
                    return True
                if until <= now:
                    return False
                self._changed.wait(min(until, self._at) - now)
