"""What a guard process keeps out of its memory, decided before its libraries are imported (``guard.entry``).

Before the command-line interface is imported, a process keeps out the modules its libraries
would load only because they are installed and that it never uses. ``sys.modules[name] = None``
makes an import of one raise ImportError, which those libraries expect and go on without:

- ``requests``: pydicom loads it to download its own test data, which no guard process does.
- ``numpy``: pydicom loads it for pixel data, which the guard decodes only to compare a copy
  by its content (``verify.compare = content``, the ``content`` extra). ``guard serve`` keeps it
  out unless its configuration asks for that comparison; the listener process always
  (``guard.app.listener_main``: receiving never decodes pixel data).

Where numpy is installed, the two are about 18 MB of each process's resident set (pydicom alone
loads in half of what it takes with them; docs/benchmark.md). Other commands keep what they find:
they are short-lived, and some (``refarchive``, ``config check``) may need it.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: Kept out of every long-running process.
NEVER_USED = ("requests",)
#: Kept out of ``guard serve`` unless ``verify.compare = content``.
PIXEL_DATA = ("numpy",)


def keep_out(names: tuple[str, ...]) -> None:
    """Make later imports of ``names`` raise ImportError (those already imported stay)."""
    for name in names:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def config_argument(args: list[str]) -> Path | None:
    """The file ``--config FILE``, ``--config=FILE``, ``-c FILE`` names, or None (then ``GUARD_CONFIG``)."""
    for index, arg in enumerate(args):
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
        if arg in {"--config", "-c"} and index + 1 < len(args):
            return Path(args[index + 1])
    return None


def serve_keeps_out(args: list[str]) -> tuple[str, ...]:
    """What ``guard serve`` with arguments ``args`` keeps out: numpy too unless its configuration compares content.

    The configuration is loaded here without pydicom (``guard.config`` does not import it). One
    that does not load keeps numpy in, and ``serve`` then reports the problem as usual.
    """
    from guard.config.settings import load_settings  # noqa: PLC0415 - only after deciding nothing else is imported first
    from guard.config.verify import CompareMode  # noqa: PLC0415 - idem
    from guard.domain.errors import ConfigError  # noqa: PLC0415 - idem

    try:
        settings = load_settings(config_argument(args))
    except ConfigError:
        return NEVER_USED
    return NEVER_USED if settings.verify.compare is CompareMode.CONTENT else NEVER_USED + PIXEL_DATA
