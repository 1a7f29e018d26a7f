"""Record the guard with py-spy, and summarise a ``--format raw --threads`` profile.

The summary gives samples per thread, and self and inclusive samples per function.
Usage: ``python -m bench.stacks PROFILE [--top N] [--thread TEXT]``. Each line of the profile
is ``thread (tid): name;frame (file:line);...;frame COUNT``; line numbers are dropped so that
a function counts once however many of its lines were sampled.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_LINE_NUMBER = re.compile(r":\d+\)$")


class ProfilerError(RuntimeError):
    """py-spy is missing."""


def _py_spy() -> str:
    """The py-spy executable: next to this Python first, then on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.is_file() else shutil.which("py-spy")
    if not found:
        msg = f"--profile needs py-spy: {Path(sys.executable).parent / 'pip'} install py-spy"
        raise ProfilerError(msg)
    return found


def add_profile_arg(parser: argparse.ArgumentParser) -> None:
    """The ``--profile-arg`` option of the benchmarks that record the guard (extra ``py-spy record`` arguments)."""
    parser.add_argument(
        "--profile-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra py-spy record argument, e.g. --profile-arg=--gil (repeatable)",
    )


def start_profiler(pid: int, output: Path, extra: tuple[str, ...]) -> subprocess.Popen[bytes]:
    """Record the guard's stacks (collapsed format, per thread) until the profiler gets SIGINT.

    ``extra`` is passed on to ``py-spy record``: ``--idle`` for wall time, ``--gil`` for the GIL holder only.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    argv = [_py_spy(), "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking", "--threads", *extra]
    log = output.with_suffix(".log").open("wb")
    try:
        return subprocess.Popen([*argv, "--output", str(output)], stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    """Ask py-spy to write its output and exit; kill it if it does not within 60 s."""
    profiler.send_signal(signal.SIGINT)
    try:
        profiler.wait(60)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait(10)


@dataclass
class Summary:
    """Sample counts of one profile."""

    total: int = 0
    threads: collections.Counter[str] = field(default_factory=collections.Counter)
    self_time: collections.Counter[str] = field(default_factory=collections.Counter)
    inclusive: collections.Counter[str] = field(default_factory=collections.Counter)


def _stacks(path: Path) -> Iterator[tuple[list[str], int]]:
    """Yield (frames, count) for every line; the first frame names the thread."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if stack and count.isdigit():
                yield stack.split(";"), int(count)


def summarise(path: Path, thread_filter: str = "") -> Summary:
    """Count samples per thread, per leaf function and per function anywhere on the stack."""
    summary = Summary()
    for frames, count in _stacks(path):
        if thread_filter and thread_filter not in frames[0]:
            continue
        summary.total += count
        summary.threads[frames[0]] += count
        functions = [_LINE_NUMBER.sub(")", frame) for frame in frames[1:]] or ["<no Python frame>"]
        summary.self_time[functions[-1]] += count
        for function in dict.fromkeys(functions):
            summary.inclusive[function] += count
    return summary


def render(summary: Summary, top: int) -> str:
    """The three tables, largest first, as sample counts and shares of all samples."""

    def rows(counter: collections.Counter[str], limit: int) -> list[str]:
        return [f"{n:7d} {100 * n / summary.total:5.1f}%  {name}" for name, n in counter.most_common(limit)]

    if summary.total == 0:
        return "no samples"
    parts = [
        f"{summary.total} samples",
        "-- per thread",
        *rows(summary.threads, top),
        "-- self (leaf function)",
        *rows(summary.self_time, top),
        "-- inclusive",
        *rows(summary.inclusive, 2 * top),
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Print the summary of one profile."""
    parser = argparse.ArgumentParser(prog="python -m bench.stacks", description=__doc__)
    parser.add_argument("profile", type=Path, help="file written by python -m bench --profile DIR")
    parser.add_argument("--top", type=int, default=30, help="rows per table (inclusive shows twice as many)")
    parser.add_argument("--thread", default="", help="only threads whose label contains this text")
    args = parser.parse_args(argv)
    print(render(summarise(args.profile, args.thread), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
