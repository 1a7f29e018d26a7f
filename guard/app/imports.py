"""What a guard process keeps out of its memory, decided before its libraries are imported (``guard.entry``).

Before the command-line interface is imported, a process keeps out the modules its libraries
would load only because they are installed and that it never uses. ``sys.modules[name] = None``
makes an import of one raise ImportError, which those libraries expect and go on without:

- ``requests``: pydicom loads it to download its own test data, which no guard process does.
- ``numpy``: pydicom loads it for pixel data, which the guard decodes only to compare a copy
  by its content (``verify.compare = content``, the ``content`` extra). ``guard serve`` keeps it
  out unless its configuration asks for that comparison; the listener process always
  (``guard.app.listener_main``: receiving never decodes pixel data).
- ``rich``, ``pygments`` and ``typer``: the command-line interface's. ``guard serve`` starts
  without it (``guard.app.serve_main``), and structlog would still load Rich, and Rich
  Pygments, to draw tracebacks on a console, and httpx both for its own command line; the
  guard's logs are JSON lines. About 3.5 MB of each process.

Where numpy is installed, the two are about 18 MB of each process's resident set (pydicom alone
loads in half of what it takes with them; docs/benchmark.md). Other commands keep what they find:
they are short-lived, and some (``refarchive``, ``config check``) may need it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guard.config.settings import Settings

#: Kept out of every long-running process.
NEVER_USED = ("requests",)
#: Kept out of ``guard serve`` unless ``verify.compare = content``.
PIXEL_DATA = ("numpy",)
#: The command-line interfaces' libraries, kept out of ``guard serve`` and the listener process:
#: structlog loads Rich (and Rich Pygments) only to draw tracebacks on a console, and httpx both
#: for its own command line; the guard's logs are JSON lines.
INTERFACE = ("rich", "pygments", "typer")


def keep_out(names: tuple[str, ...]) -> None:
    """Make later imports of ``names`` raise ImportError (those already imported stay)."""
    for name in names:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def serve_keeps_out(settings: Settings) -> tuple[str, ...]:
    """What ``guard serve`` keeps out besides ``NEVER_USED`` and ``INTERFACE``: numpy unless ``verify.compare = content``."""
    from guard.config.verify import CompareMode  # noqa: PLC0415 - guard.config imports no DICOM library

    return () if settings.verify.compare is CompareMode.CONTENT else PIXEL_DATA
