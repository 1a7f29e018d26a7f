"""CPU the guard spends per inbound association: N C-ECHO associations against a ``guard serve``.

Run from the root of the tree to measure (``python -m guard`` imports the guard found there)::

    .venv/bin/python -m bench.association_cpu --associations 200

The guard's CPU is utime + stime of ``/proc/<pid>/stat`` before and after the associations;
the CPU it spends idle (its background loops) over the same wall time, measured first, is
subtracted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from bench.options import LISTENER_PROCESS, add_listener_process_arg
from bench.procfs import tree_cpu_seconds
from tests.support.ports import free_port
from tests.support.waiting import wait_for_port

_CONFIG = """
[node]
ae_title = "GUARD"
bind = "127.0.0.1"
port = {port}
data_dir = "{data}"
listener_process = {listener_process}

[[sources]]
ae_title = "ECHOSCU"
host = "127.0.0.1"
port = 1

[archive]
probe_interval = 0
port = {archive}

[http]
port = 0
"""


def _echoes(port: int, count: int) -> None:
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    for _ in range(count):
        assoc = ae.associate("127.0.0.1", port, ae_title="GUARD")
        if not assoc.is_established:
            msg = "association refused"
            raise RuntimeError(msg)
        assoc.send_c_echo()
        assoc.release()


def _cpu(pid: int) -> float:
    value = tree_cpu_seconds(pid)  # the main process and its listener process, if any
    if value is None:
        msg = f"cannot read /proc/{pid}/stat"
        raise RuntimeError(msg)
    return value


def measure(count: int, idle: float, *, listener_process: bool = LISTENER_PROCESS) -> tuple[float, float, float]:
    """(CPU seconds over the associations, idle CPU seconds over the same time, wall seconds)."""
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        config = Path(folder) / "guard.toml"
        config.write_text(
            _CONFIG.format(port=port, data=Path(folder) / "data", archive=free_port(), listener_process=str(listener_process).lower())
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
        proc = subprocess.Popen([sys.executable, "-m", "guard", "serve", "--config", str(config)], env=env, stdout=subprocess.DEVNULL)
        try:
            wait_for_port("127.0.0.1", port, 60)
            _echoes(port, 3)  # warm up: imports and first-use caches are not per association
            before = _cpu(proc.pid)
            time.sleep(idle)
            idle_rate = (_cpu(proc.pid) - before) / idle
            start_cpu, start = _cpu(proc.pid), time.monotonic()
            _echoes(port, count)
            wall = time.monotonic() - start
            used = _cpu(proc.pid) - start_cpu
        finally:
            proc.terminate()
            proc.wait(30)
    return used, idle_rate * wall, wall


def main() -> None:
    """Print the guard's CPU per association."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=200)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measured first")
    add_listener_process_arg(parser)
    args = parser.parse_args()
    used, idle, wall = measure(args.associations, args.idle, listener_process=args.listener_process)
    per = (used - idle) / args.associations * 1000
    processes = " (main and listener processes)" if args.listener_process else ""
    summary = f"{args.associations} C-ECHO associations in {wall:.1f} s: guard CPU{processes} {used:.2f} s, idle share {idle:.2f} s"
    print(f"{summary}, {per:.1f} ms per association")


if __name__ == "__main__":
    main()
