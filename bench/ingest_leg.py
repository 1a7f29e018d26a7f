"""The receiving leg alone: storescu into a guard whose archive never answers, against storescu into Orthanc.

``python -m bench.ingest_leg --instances 300`` (run from the repository root) sends the same
synthetic 512x512 16-bit CT study twice, on one storescu association: straight to a fresh
Orthanc, then to a fresh guard whose archive is a socket that accepts connections and never
answers, so the guard's forwarding worker waits on its first association and nothing but
receiving runs in the guard. It prints storescu's time on both paths, their ratio, and the
guard's CPU per instance (user plus system, ``/proc``). With ``--profile DIR`` the guard is
recorded by py-spy, its listener process with it (only threads holding the interpreter lock); read it with
``python -m bench.stacks DIR/guard-ingest-*.txt``.

The full benchmark (``python -m bench``) measures the guard with forwarding running; this one
separates the cost of receiving from the cost of forwarding beside it.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.__main__ import generate
from bench.procfs import settle, tree_cpu_seconds
from bench.runs import (
    DEFAULT_FORWARD_NICE,
    POSTGRESQL,
    SQLITE,
    BenchConfig,
    BenchError,
    StudyFiles,
    _check_storescu,
    _ledger_url,
    _sender,
    run_direct,
)
from bench.stacks import start_profiler, stop_profiler
from tests.support.guard import GUARD_AE, GuardProcess


def _silent_archive() -> socket.socket:
    """A listening loopback socket that is never accepted from: associations to it wait for their timeout."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener


def _through_guard(
    files: StudyFiles, workdir: Path, cfg: BenchConfig, profile_dir: Path | None, max_pdu: int | None = None
) -> tuple[float, float]:
    """(storescu seconds, guard CPU seconds) for one send into a guard that forwards nowhere (``node.max_pdu``: ``max_pdu``)."""
    with _silent_archive() as archive, _ledger_url(workdir, cfg.ledger) as ledger_url:
        guard = GuardProcess(
            workdir / "guard",
            fresh=True,  # a new interpreter, as production starts it (not forked from the tests' preloaded server)
            archive_port=archive.getsockname()[1],
            archive_ae="ARCHIVE",
            ledger_url=ledger_url,
            forward={"lease_seconds": 600, "idle_poll": 0.05, "nice": DEFAULT_FORWARD_NICE},
            node={} if max_pdu is None else {"max_pdu": max_pdu},
        )
        guard.start(timeout=60)
        try:
            pid = guard.proc.pid if guard.proc is not None else -1
            settle(pid)
            profile = None if profile_dir is None else profile_dir / f"guard-ingest-{int(time.time())}.txt"
            profiler = None if profile is None else start_profiler(pid, profile, ("--gil", "--subprocesses"))
            box: dict[str, Any] = {}
            before = tree_cpu_seconds(pid) or 0.0
            start = time.monotonic()
            sender = _sender(guard.port, GUARD_AE, files.directories[0], cfg, box)
            sender.start()
            sender.join(cfg.timeout)
            seconds = time.monotonic() - start
            cpu = (tree_cpu_seconds(pid) or 0.0) - before
            if profiler is not None:
                stop_profiler(profiler)
            if sender.is_alive():
                msg = f"storescu did not finish in {cfg.timeout:.0f} s"
                raise BenchError(msg)
            _check_storescu(box, files.studies[0])
        finally:
            guard.stop()
    return seconds, cpu


def main(argv: list[str] | None = None) -> int:
    """Run both paths once and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_leg", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300, help="instances in the study (default 300)")
    parser.add_argument("--pdu", type=int, default=131072, help="storescu -pdu (default 131072)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR", help="record the guard with py-spy into DIR")
    parser.add_argument("--ledger", choices=(SQLITE, POSTGRESQL), default=SQLITE, help="the guard's ledger (default sqlite)")
    parser.add_argument(
        "--guard-max-pdu",
        type=int,
        default=None,
        help="the guard's node.max_pdu (default: the guard's own); storescu sends no larger PDUs: 16384 measures a sender of 16 KiB PDUs",
    )
    args = parser.parse_args(argv)
    cfg = BenchConfig(storescu_pdu=args.pdu or None, timeout=60 + 0.3 * args.instances, ledger=args.ledger)
    with tempfile.TemporaryDirectory(prefix="guard-ingest-leg-") as folder:
        root = Path(folder)
        files = generate(root / "studies", args.instances)
        direct = run_direct(files, root / "direct", cfg)
        guard_seconds, guard_cpu = _through_guard(files, root, cfg, args.profile, args.guard_max_pdu)
    count = files.count
    print(f"storescu -> Orthanc:                      {direct.storescu_seconds:6.2f} s  {count / direct.storescu_seconds:6.1f} inst/s")
    print(f"storescu -> guard ({args.ledger}, archive never answers): {guard_seconds:6.2f} s  {count / guard_seconds:6.1f} inst/s")
    print(f"ingest leg, direct storescu time / guard storescu time: {direct.storescu_seconds / guard_seconds:.2f}")
    print(f"guard CPU {1000 * guard_cpu / count:.2f} ms an instance while receiving only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
