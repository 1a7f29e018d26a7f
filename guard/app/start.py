"""What the two lean starts (``serve_main``, ``listener_main``) share: each failure to start is one line on stderr.

Nothing is imported here at module level that those starts keep out or import late.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from guard.config.settings import Settings

EXIT_FAILED = 1
EXIT_CONFIG = 2


def settings_or_none(config: Path | None) -> Settings | None:
    """The configuration from ``config`` (or ``GUARD_CONFIG``), or None after saying on stderr why it is invalid."""
    from guard.config.settings import load_settings  # noqa: PLC0415 - guard.config imports no DICOM library
    from guard.domain.errors import ConfigError  # noqa: PLC0415 - idem

    try:
        return load_settings(config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - the one line a failed start leaves
        return None


def started(start: Callable[[], None], stop: Callable[[], None], what: str) -> bool:
    """Run ``start``; if it fails, say ``what: problem`` on stderr, undo with ``stop`` and return False."""
    from guard.domain.errors import GuardError  # noqa: PLC0415 - as above

    try:
        start()
    except (GuardError, OSError) as exc:
        print(f"{what}: {exc}", file=sys.stderr)  # noqa: T201 - idem
        stop()
        return False
    return True


def handle_signals(stop: Callable[[], None], reload: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call ``stop``; SIGHUP calls ``reload`` (the TLS and HTTPS certificates), in a thread of their own.

    A Python signal handler runs in the main thread between two of its bytecodes, holding
    whatever lock the main thread held then. Calling ``stop`` there (``threading.Event.set``)
    deadlocked when the signal came while the main thread was inside that Event's ``wait``:
    a listener process whose main process had died then never stopped. The handlers only write
    the signal's number to a pipe, which takes no lock; the ``signals`` thread reads it and calls.
    """
    actions = {signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGHUP: reload}
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def deliver() -> None:
        while data := os.read(read_end, 64):
            for number in data:
                actions[signal.Signals(number)]()

    threading.Thread(target=deliver, name="signals", daemon=True).start()

    def handler(number: int, _frame: object) -> None:
        with contextlib.suppress(OSError):  # a full pipe: that signal is already waiting to be delivered
            os.write(write_end, bytes([number]))

    for number in actions:
        signal.signal(number, handler)
