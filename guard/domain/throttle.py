"""Reporting refusals without letting a flood of them become a flood of audit records."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

#: Seconds between two reports of the same refusal from one address.
AUDIT_WINDOW = 10.0

#: Called with (peer address, reason, detail).
Reporter = Callable[[str, str, dict[str, Any]], None]


class RefusalThrottle:
    """At most one report per address and reason per ``window`` seconds, with how many were folded in."""

    def __init__(self, report: Reporter, window: float = AUDIT_WINDOW) -> None:
        """Pass reports on to ``report``."""
        self._report = report
        self._window = window
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._folded: defaultdict[tuple[str, str], int] = defaultdict(int)

    def __call__(self, address: str, reason: str, detail: dict[str, Any]) -> None:
        """Report now, or count it into the next report."""
        key = (address, reason)
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self._window) < self._window:
                self._folded[key] += 1
                return
            self._last[key] = now
            count = self._folded.pop(key, 0) + 1
        self._report(address, reason, {**detail, "count": count})
