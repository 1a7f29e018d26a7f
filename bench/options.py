"""Options shared by the benchmarks: whether the guard runs its DICOM listener in a process of its own."""

from __future__ import annotations

import argparse

from guard.config.settings import NodeSettings

#: The guard's own default (``node.listener_process``): the benchmarks measure what an installation runs.
LISTENER_PROCESS: bool = NodeSettings().listener_process


def add_listener_process_arg(parser: argparse.ArgumentParser) -> None:
    """``--listener-process`` / ``--no-listener-process``, defaulting to the guard's own setting."""
    parser.add_argument(
        "--listener-process",
        action=argparse.BooleanOptionalAction,
        default=LISTENER_PROCESS,
        help="the DICOM listener in a process of its own, node.listener_process (default: the guard's default, %(default)s)",
    )
