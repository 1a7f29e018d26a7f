"""The entry point of the listener process: ``python -m guard listener --channel-fd N [--config FILE]``.

``guard serve`` starts it when ``node.listener_process`` is on (``guard.app.listener_process``);
it is never run by hand. ``python -m guard`` hands this command line here before importing the
command-line interface, so the process loads only what receiving needs: not Typer, Rich and the
other commands, not Alembic (the main process has migrated the ledger), and not numpy, which
pydicom imports whenever it is installed (the ``content`` extra, for ``verify.compare =
content``) although the listener never decodes pixel data. About a third less memory than the
same process started through the command-line interface (docs/benchmark.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from guard.app.imports import INTERFACE, NEVER_USED, PIXEL_DATA, keep_out
from guard.app.start import EXIT_CONFIG, EXIT_FAILED, handle_signals, settings_or_none, started

#: Modules the listener never uses that its libraries would load only because they are installed
#: (``guard.app.imports``). ``None`` in ``sys.modules`` makes an import of them raise ImportError, which pydicom expects.
NOT_LOADED = (*NEVER_USED, *PIXEL_DATA, *INTERFACE)


def run(config: Path | None, channel_fd: int) -> int:
    """Serve as the listener process; the exit code when it cannot start (it ends the process itself once started)."""
    keep_out(NOT_LOADED)
    from guard import runtime  # noqa: PLC0415 - after NOT_LOADED is in place

    settings = settings_or_none(config)
    if settings is None:
        return EXIT_CONFIG
    runtime.configure_logging(redact_patient_data=settings.log.redact_patient_data)
    if channel_fd < 0:
        print("guard listener is started by guard serve (node.listener_process), not by hand", file=sys.stderr)  # noqa: T201
        return EXIT_FAILED
    from guard.app.listener_child import ListenerChild  # noqa: PLC0415 - idem
    from guard.app.listener_process import ChildChannel  # noqa: PLC0415 - idem

    child = ListenerChild(settings, ChildChannel(channel_fd), parent_pid=os.getppid())
    handle_signals(child.request_stop, child.reload_certificates)
    if not started(child.start, child.stop, "listener cannot start"):
        return EXIT_FAILED
    runtime.freeze_heap()
    child.run()
    return child.stop_and_exit()


def main() -> None:
    """Parse ``listener --channel-fd N [--config FILE]`` (``GUARD_CONFIG`` as the default file) and run."""
    parser = argparse.ArgumentParser(prog="guard listener", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["listener"])
    parser.add_argument("--config", "-c", type=Path, default=None, help="TOML configuration file (default: $GUARD_CONFIG)")
    parser.add_argument("--channel-fd", type=int, default=-1, help="datagram socket inherited from the main process")
    args = parser.parse_args()
    sys.exit(run(args.config, args.channel_fd))
