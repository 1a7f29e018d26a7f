"""``python -m bench.idle``: the CPU a guard uses when nothing happens, as a share of one core.

A fresh guard runs with its default settings (a SQLite ledger, the admin API, the archive
probe every ``archive.probe_interval``) in a temporary folder on free loopback ports. Its
archive is the project's reference archive, run in this benchmark's process as a real archive
runs on another machine (``--builtin-archive``: inside the guard, as ``make run`` has it). Once
the guard has started and settled, its user plus system CPU time (``/proc/<pid>/stat``) is
read over ``--seconds``: first with nothing connected, then with one idle association held
open by a peer (as a PACS that keeps its association between studies does). Each figure is
printed with "met" or "missed" against the target, never asserted.

Examples::

    .venv/bin/python -m bench.idle --seconds 60
    .venv/bin/python -m bench.idle --seconds 60 --builtin-archive
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from bench.options import LISTENER_PROCESS, add_listener_process_arg
from bench.procfs import tree_cpu_seconds
from guard.sandbox.archive import ReferenceArchive
from tests.support.guard import render_toml
from tests.support.ports import LOOPBACK, free_port
from tests.support.waiting import port_is_open, wait_until

#: An idle guard must use less than this share of one core.
TARGET_IDLE_PERCENT = 1.0
#: Seconds after start-up before measuring: start-up work (audit chain check, first probe) is over and the loops
#: have stretched their idle waits (``guard.domain.pacing``).
SETTLE_SECONDS = 30.0
GUARD_AE = "GUARD"
PEER_AE = "IDLEPEER"


@dataclass(frozen=True)
class IdleResult:
    """CPU of the guard over one idle window."""

    label: str
    seconds: float
    cpu_seconds: float

    @property
    def percent(self) -> float:
        """CPU time as a percentage of one core over the window."""
        return 100.0 * self.cpu_seconds / self.seconds

    @property
    def met(self) -> bool:
        """Whether the share stays under the target."""
        return self.percent < TARGET_IDLE_PERCENT


def _config(root: Path, archive_port: int | None, *, listener_process: bool = LISTENER_PROCESS) -> dict[str, object]:
    """Default settings except what must be unique to this run: ports, folders, the archive (None: built in), the listener process."""
    archive = {"port": free_port()} if archive_port is None else {"host": LOOPBACK, "port": archive_port}
    return {
        "node": {"bind": LOOPBACK, "port": free_port(), "data_dir": str(root / "data"), "listener_process": listener_process},
        "sources": [{"ae_title": PEER_AE, "host": LOOPBACK, "port": free_port()}],
        "archive": archive,
        "http": {"bind": LOOPBACK, "port": free_port()},
    }


@contextmanager
def running_guard(
    root: Path, archive_port: int | None, timeout: float = 60.0, *, listener_process: bool = LISTENER_PROCESS
) -> Iterator[tuple[int, int]]:
    """Start ``guard serve`` in ``root``; yield its pid and DICOM port; stop it by its pid."""
    config = _config(root, archive_port, listener_process=listener_process)
    path = root / "guard.toml"
    path.write_text(render_toml(config))
    log_path = root / "guard.log"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GUARD_")}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "guard", "serve", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    port = int(config["node"]["port"])  # type: ignore[index]

    def started() -> bool:
        if proc.poll() is not None:
            msg = f"guard exited with {proc.returncode}: {log_path.read_text(errors='replace')[-2000:]}"
            raise RuntimeError(msg)
        return '"service.started"' in log_path.read_text(errors="replace") and port_is_open(LOOPBACK, port)

    try:
        wait_until(started, timeout, interval=0.2, message="guard did not start")
        yield proc.pid, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def measure(pid: int, label: str, seconds: float) -> IdleResult:
    """The CPU time of the guard's processes (the main process and its listener, if any) over ``seconds`` of wall time."""
    before, started = tree_cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    after, elapsed = tree_cpu_seconds(pid), time.monotonic() - started
    if before is None or after is None:
        msg = f"cannot read the CPU time of process {pid}"
        raise RuntimeError(msg)
    return IdleResult(label=label, seconds=elapsed, cpu_seconds=after - before)


@contextmanager
def open_association(port: int) -> Iterator[None]:
    """One association to the guard, verified by a C-ECHO, then left idle until released."""
    ae = AE(ae_title=PEER_AE)
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, port, ae_title=GUARD_AE)
    if not assoc.is_established:
        msg = "the guard refused the idle association"
        raise RuntimeError(msg)
    try:
        assoc.send_c_echo()
        yield
    finally:
        assoc.release()


def run_idle(seconds: float, *, builtin_archive: bool = False, listener_process: bool = LISTENER_PROCESS) -> list[IdleResult]:
    """Both idle windows on one fresh guard."""
    root = Path(tempfile.mkdtemp(prefix="guard-idle-"))
    archive = None if builtin_archive else ReferenceArchive(root / "archive", port=free_port()).start()
    try:
        with running_guard(root, None if archive is None else archive.port, listener_process=listener_process) as (pid, port):
            time.sleep(SETTLE_SECONDS)
            results = [measure(pid, "nothing connected", seconds)]
            with open_association(port):
                results.append(measure(pid, "one idle association open", seconds))
            return results
    finally:
        if archive is not None:
            archive.stop()
        shutil.rmtree(root, ignore_errors=True)


def render_idle(results: list[IdleResult], *, builtin_archive: bool = False, listener_process: bool = LISTENER_PROCESS) -> str:
    """One line per window, with the target."""
    target = f"target < {TARGET_IDLE_PERCENT:.0f} % of one core"
    where = "built-in archive" if builtin_archive else "archive in another process"
    settings = "default settings, both processes" if listener_process else "node.listener_process = false, one process"
    lines = [f"Idle guard ({settings}, {where}; CPU from /proc/<pid>/stat; {target}):"]
    for r in results:
        verdict = "met" if r.met else "missed"
        lines.append(f"  {r.label}: {r.percent:.2f} % of one core ({r.cpu_seconds:.2f} s CPU over {r.seconds:.1f} s): target {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure and print; exit 1 only when the guard cannot be run (a missed target is reported, not failed)."""
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each idle window (default 60)")
    parser.add_argument("--builtin-archive", action="store_true", help="let the guard run its built-in archive (as make run)")
    add_listener_process_arg(parser)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead")
    args = parser.parse_args(argv)
    try:
        results = run_idle(args.seconds, builtin_archive=args.builtin_archive, listener_process=args.listener_process)
    except (RuntimeError, TimeoutError) as exc:
        print(f"idle benchmark failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        rows = [{"label": r.label, "seconds": r.seconds, "cpu_seconds": r.cpu_seconds, "percent": r.percent, "met": r.met} for r in results]
        print(json.dumps(rows))
    else:
        print(render_idle(results, builtin_archive=args.builtin_archive, listener_process=args.listener_process))
    return 0


if __name__ == "__main__":
    sys.exit(main())
