"""The guard's entry point: the ``guard`` command and ``python -m guard``.

``guard listener`` goes to the listener process's own start (``guard.app.listener_main``),
without the command-line interface. ``guard serve`` first keeps out of the process what it
will not use (``guard.app.imports``), then runs as every other command does (``guard.cli``).
"""

from __future__ import annotations

import sys

from guard.app.imports import keep_out, serve_keeps_out


def main() -> None:
    """Run the command on the command line (``guard listener`` without the command-line interface)."""
    command = sys.argv[1:2]
    if command == ["listener"]:
        from guard.app.listener_main import main as listener  # noqa: PLC0415 - the listener's lean start

        listener()
        return
    if command == ["serve"]:
        keep_out(serve_keeps_out(sys.argv[2:]))
    from guard.cli.main import main as cli  # noqa: PLC0415 - after keep_out

    cli()
