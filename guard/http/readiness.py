"""Readiness checks for ``GET /readyz``: each answers True or False, never raises.

``guard serve`` combines them into the ``readiness`` callable given to ``create_app``::

    lambda: {
        "ledger": ledger_reachable(ledger),
        "spool": directory_writable(spool.incoming),
        "workers": forwarder.alive() and confirmer.alive(),
    }
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from threading import Thread

from guard.ledger.ledger import Ledger


def ledger_reachable(ledger: Ledger) -> bool:
    """Whether a trivial query on the ledger succeeds now."""
    return ledger.reachable()


def directory_writable(path: Path) -> bool:
    """Whether a file can be created, written, synced and removed in ``path`` now."""
    try:
        fd, name = tempfile.mkstemp(prefix=".readyz-", dir=path)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(name).unlink(missing_ok=True)
    except OSError:
        return False
    return True


def threads_alive(threads: Iterable[Thread]) -> bool:
    """Whether there is at least one thread and every one of them is running."""
    seen = list(threads)
    return bool(seen) and all(thread.is_alive() for thread in seen)
