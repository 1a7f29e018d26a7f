"""The start of ``guard serve``: the node, without the command-line interface.

``guard.entry`` hands ``guard serve [--config FILE]`` here (``guard serve --help`` still goes to
the command-line interface, which documents it). The process that runs for months then loads
what the node uses and not what only the other commands need: Typer, Rich (which structlog
would otherwise load for its console tracebacks, with Pygments), and every other command's
modules. What it keeps out is decided before any of its libraries is imported
(``guard.app.imports``). A ledger that needs migrating is migrated by a child process, so
Alembic is never loaded either (``guard.ledger.db.migrate_in_child``). Together about 13 MB of
the main process's resident set (docs/benchmark.md).

Exit codes as for every command (``guard.cli.main``): 2 when the configuration is invalid, 1 when
the node cannot start; either is said in one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from guard.app.imports import INTERFACE, NEVER_USED, keep_out, serve_keeps_out
from guard.app.start import EXIT_CONFIG, EXIT_FAILED, handle_signals, settings_or_none, started


def run(config: Path | None) -> int:
    """Run the node until SIGTERM or SIGINT, then stop it cleanly; the exit code."""
    keep_out(NEVER_USED + INTERFACE)
    settings = settings_or_none(config)
    if settings is None:
        return EXIT_CONFIG
    keep_out(serve_keeps_out(settings))
    from guard import runtime  # noqa: PLC0415 - after keep_out
    from guard.app.service import GuardService  # noqa: PLC0415 - idem

    runtime.configure_logging(redact_patient_data=settings.log.redact_patient_data)
    service = GuardService(settings, config_path=str(config) if config else None, migrate_apart=True)
    stop = threading.Event()
    reload_requested = threading.Event()
    handle_signals(stop.set, reload_requested.set)  # the reload is done below, not in the handler
    if not started(service.start, service.stop, "cannot start"):
        return EXIT_FAILED
    runtime.freeze_heap()
    while not stop.wait(0.5):
        if reload_requested.is_set():
            reload_requested.clear()
            service.reload_certificates()
    service.stop()
    return 0


def wants_interface(args: list[str]) -> bool:
    """Whether ``guard serve args`` is for the command-line interface (its help) rather than to run the node."""
    return any(arg in {"--help", "-h"} for arg in args)


def main(args: list[str]) -> None:
    """Parse ``serve [--config FILE]`` (``GUARD_CONFIG`` as the default file) and run."""
    parser = argparse.ArgumentParser(prog="guard serve", description="Run the guard until SIGTERM or SIGINT, then stop cleanly.")
    parser.add_argument("--config", "-c", type=Path, default=None, help="TOML configuration file (default: $GUARD_CONFIG)")
    parsed = parser.parse_args(args)
    sys.exit(run(parsed.config))
