"""The guard's entry point: the ``guard`` command and ``python -m guard``.

``guard listener`` goes to the listener process's own start (``guard.app.listener_main``) and
``guard serve`` to the node's (``guard.app.serve_main``), both without the command-line
interface, which they would load only to parse one option. Every other command, and
``guard serve --help``, goes to the command-line interface (``guard.cli``).
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run the command on the command line (``guard listener`` and ``guard serve`` without the command-line interface)."""
    command = sys.argv[1:2]
    if command == ["listener"]:
        from guard.app.listener_main import main as listener  # noqa: PLC0415 - the listener's lean start

        listener()
        return
    if command == ["serve"]:
        from guard.app import serve_main  # noqa: PLC0415 - the node's lean start

        if not serve_main.wants_interface(sys.argv[2:]):
            serve_main.main(sys.argv[2:])
            return
    from guard.cli.main import main as cli  # noqa: PLC0415 - only for the commands that use it

    cli()
