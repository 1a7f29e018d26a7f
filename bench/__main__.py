"""``python -m bench``: run the pass-through benchmark and print the figures (run from the repository root).

Examples::

    .venv/bin/python -m bench                      # 200 and 2,000 instances
    .venv/bin/python -m bench --quick              # a 50-instance smoke check
    .venv/bin/python -m bench --sizes 200 --repeat 3 --output /tmp/bench.json
    .venv/bin/python -m bench --idle 60 --sizes 200  # also the idle phase (python -m bench.idle)
    .venv/bin/python -m bench --sizes 400 --senders 1 4 --ledger sqlite postgresql
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pydicom
import pynetdicom

from bench.idle import render_idle, run_idle
from bench.options import add_listener_process_arg
from bench.report import render, write_json
from bench.runs import (
    DEFAULT_FORWARD_NICE,
    DEFAULT_WORKERS,
    POSTGRESQL,
    SQLITE,
    BenchConfig,
    BenchError,
    RunResult,
    StudyFiles,
    run_direct,
    run_through_guard,
)
from bench.stacks import ProfilerError, add_profile_arg
from bench.syncs import measure as measure_syncs
from guard.config.settings import NodeSettings
from tests.support.datasets import make_study
from tests.support.processes import PeerError, find_tool, peer_env

DEFAULT_SIZES = (200, 2000)
QUICK_SIZES = (50,)
#: The guard's own max PDU, which the benchmark leaves at its default.
GUARD_PDU = NodeSettings().max_pdu


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help=f"study sizes in instances (default {' '.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--quick", action="store_true", help=f"smoke check: sizes {' '.join(map(str, QUICK_SIZES))}, unless --sizes")
    parser.add_argument("--repeat", type=int, default=1, help="runs per path and size; the median is reported (default 1)")
    parser.add_argument("--output", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--pdu", type=int, default=131072, help="storescu -pdu on both paths; 0 = DCMTK default (default 131072)")
    parser.add_argument("--archive-pdu", type=int, help="Orthanc MaximumPduLength (default: Orthanc's own, 16384)")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"guard forwarding workers (default {DEFAULT_WORKERS}, the guard's default, forward.workers)",
    )
    parser.add_argument(
        "--forward-nice",
        type=int,
        default=DEFAULT_FORWARD_NICE,
        help=f"how much lower the forwarding workers' CPU priority is (default {DEFAULT_FORWARD_NICE}, the guard's default, forward.nice)",
    )
    add_listener_process_arg(parser)
    parser.add_argument(
        "--senders",
        type=int,
        nargs="+",
        default=[1],
        help="storescu associations at once, each with its own study; a size is split between them (default 1)",
    )
    parser.add_argument(
        "--ledger",
        nargs="+",
        choices=[SQLITE, POSTGRESQL],
        default=[SQLITE],
        help="the guard's ledger: an SQLite file, a fresh database on the local PostgreSQL server, or both (default sqlite)",
    )
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between polls of the archive (default 0.05)")
    parser.add_argument("--timeout", type=float, help="seconds a run may take (default: 60 + 0.3 s per instance, at least 120)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="record the guard with py-spy (collapsed stacks) into DIR")
    add_profile_arg(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (generated studies) for inspection")
    parser.add_argument(
        "--idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first measure an idle guard's CPU for this many seconds per window (python -m bench.idle); 0 skips (default)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or any(size < 1 for size in args.sizes or ()) or any(n < 1 for n in args.senders):
        parser.error("--repeat, --sizes and --senders must be positive")
    return args


def _without_venv_tools() -> None:
    """Keep this virtualenv's bin folder off PATH: pynetdicom installs a ``storescu`` of its own there.

    Only DCMTK's ``storescu`` is meant; the guard is started with ``sys.executable`` and does
    not need PATH. The change is limited to this process and the peers it starts.
    """
    venv_bin = Path(sys.prefix) / "bin"
    kept = [entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry and Path(entry).resolve() != venv_bin.resolve()]
    os.environ["PATH"] = os.pathsep.join(kept)


def _first_line(argv: list[str], needle: str) -> str:
    """The first output line of ``argv`` containing ``needle`` (a version banner)."""
    result = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=30, check=False, env=peer_env())
    for line in (result.stdout + result.stderr).splitlines():
        if needle in line:
            return line.strip()
    return ""


def source_revision() -> str:
    """The commit of the guard being measured, with ``-dirty`` when the work tree has changes (or "unknown")."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    result = subprocess.run(
        [git, "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=30, check=False, cwd=Path(__file__).parent
    )
    return result.stdout.strip() or "unknown"


def check_peers() -> dict[str, str]:
    """Find DCMTK's storescu and Orthanc and return their version banners; raise if either is missing or wrong."""
    _without_venv_tools()
    storescu = find_tool("storescu")
    dcmtk = _first_line([storescu, "--version"], "dcmtk")
    if not dcmtk:
        msg = f"{storescu} is not DCMTK's storescu (pynetdicom ships one of its own); install the Debian package dcmtk"
        raise PeerError(msg)
    orthanc = _first_line([find_tool("Orthanc"), "--version"], "Orthanc")
    return {"dcmtk": dcmtk.strip("$ ").replace("dcmtk: ", "DCMTK "), "orthanc": orthanc}


def generate(root: Path, size: int, senders: int = 1) -> StudyFiles:
    """Write ``size`` 512x512 16-bit CT instances as ``senders`` studies, each in its own folder under ``root``."""
    started = time.monotonic()
    directories, studies = [], []
    for index in range(senders):
        directory = root / f"study-{size}-{senders}-{index}"
        count = size // senders + (1 if index < size % senders else 0)
        studies.append(make_study(directory, count, rows=512, columns=512, patient_id=f"BENCH{size}S{index}"))
        directories.append(directory)
    total = sum(path.stat().st_size for study in studies for path in study.paths)
    print(
        f"  generated {size} instances in {senders} studies ({total / 1e6:.0f} MB) in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    return StudyFiles(directories=tuple(directories), studies=tuple(studies), total_bytes=total)


def metadata(args: argparse.Namespace, cfg: BenchConfig, versions: dict[str, str], instance_bytes: int) -> dict[str, Any]:
    """Everything the figures depend on, for the header and the JSON."""
    return {
        **versions,
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "pydicom": pydicom.__version__,
        "pynetdicom": pynetdicom.__version__,
        "instance_bytes": instance_bytes,
        "storescu_pdu": cfg.storescu_pdu,
        "archive_pdu": cfg.archive_pdu,
        "guard_pdu": GUARD_PDU,
        "workers": cfg.workers,
        "forward_nice": cfg.forward_nice,
        "listener_process": cfg.listener_process,
        "ledgers": args.ledger,
        "poll_interval": cfg.poll_interval,
        "repeat": args.repeat,
        "revision": source_revision(),
        "tcp_nodelay": "TCP_NODELAY=1 for every DCMTK and Orthanc process",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _config(args: argparse.Namespace, size: int, ledger: str) -> BenchConfig:
    return BenchConfig(
        storescu_pdu=args.pdu or None,
        archive_pdu=args.archive_pdu,
        workers=args.workers,
        forward_nice=args.forward_nice,
        listener_process=args.listener_process,
        ledger=ledger,
        poll_interval=args.poll,
        timeout=args.timeout or max(120.0, 60.0 + 0.3 * size),
        profile_dir=args.profile,
        profile_args=tuple(args.profile_arg),
    )


def _report(label: str, attempt: int, result: RunResult) -> None:
    print(
        f"  {label:17} run {attempt}: {result.instances_per_second:6.1f} inst/s, "
        f"{result.archive_seconds:.2f} s to archive, storescu {result.storescu_seconds:.2f} s",
        file=sys.stderr,
    )


def run(args: argparse.Namespace) -> list[RunResult]:
    """Generate each study set once and measure the direct path and the guard (per ledger) on it, direct first."""
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    root = Path(tempfile.mkdtemp(prefix="guard-bench-"))
    runs: list[RunResult] = []
    meta: dict[str, Any] = {}
    try:
        versions = check_peers()
        # What this storage charges for the guard's syncs, in the folder the runs use (bench.syncs).
        storage = asdict(measure_syncs(root))
        for size in sizes:
            for senders in args.senders:
                print(f"size {size}, {senders} sender(s):", file=sys.stderr)
                files = generate(root, size, senders)
                meta = metadata(args, _config(args, size, args.ledger[0]), versions, files.total_bytes // size)
                meta["syncs"] = storage
                for attempt in range(1, args.repeat + 1):
                    direct = run_direct(files, root / f"run-{size}-{senders}-direct-{attempt}", _config(args, size, SQLITE))
                    runs.append(direct)
                    _report("direct", attempt, direct)
                    for ledger in args.ledger:
                        cfg = _config(args, size, ledger)
                        result = run_through_guard(files, root / f"run-{size}-{senders}-{ledger}-{attempt}", cfg)
                        runs.append(result)
                        _report(f"guard ({ledger})", attempt, result)
                if not args.keep:
                    for directory in files.directories:
                        shutil.rmtree(directory, ignore_errors=True)
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(render(meta, runs))
    if args.output is not None:
        write_json(args.output, meta, runs)
        print(f"\nJSON results written to {args.output}")
    return runs


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 with a message when a run cannot complete (targets never fail it)."""
    args = parse_args(argv)
    try:
        if args.idle > 0:
            print(render_idle(run_idle(args.idle)))
        run(args)
    except (BenchError, PeerError, ProfilerError, TimeoutError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
