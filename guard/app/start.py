"""What the two lean starts (``serve_main``, ``listener_main``) share: each failure to start is one line on stderr.

Nothing is imported here at module level that those starts keep out or import late.
"""

from __future__ import annotations

import signal
import sys
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
    """SIGTERM and SIGINT call ``stop``; SIGHUP calls ``reload`` (the TLS and HTTPS certificates), in the main thread."""
    signal.signal(signal.SIGTERM, lambda *_: stop())
    signal.signal(signal.SIGINT, lambda *_: stop())
    signal.signal(signal.SIGHUP, lambda *_: reload())
