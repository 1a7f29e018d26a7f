"""What the storage charges for a durable receipt, measured in the benchmark's own folder.

The guard answers a C-STORE only once the instance is durable (invariant 1): the file's data
fsynced, its folder fsynced after the rename into place, and the ledger's commit (SQLite in WAL
mode with ``synchronous=FULL``: a sync of its log). Orthanc 1.10 with its defaults, which the
direct path measures, syncs once an instance (``SyncStorageArea``: ``strace`` of a 20-instance
send shows 20 ``fdatasync`` calls and no rename), so the ratio of target 1 depends on what this
storage charges for the guard's two further syncs, and the benchmark prints it beside the figures:
``python -m bench.syncs [--folder DIR] [--count N] [--size BYTES]``.

Each of ``count`` rounds writes a file of ``size`` bytes into a scratch folder the way the spool
receives one (written, then renamed into a study folder), and times it three ways, interleaved
so that a noisy neighbour affects all of them alike: without any sync; with the file's fsync;
with the file's and the folder's. A separate SQLite database in the same folder times one
single-row commit. Medians, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: About the size of one benchmark instance (512x512 16-bit CT).
INSTANCE_BYTES = 530_000


@dataclass(frozen=True)
class SyncCosts:
    """Medians in milliseconds for one file of ``size`` bytes."""

    size: int
    write_ms: float
    file_sync_ms: float
    folder_sync_ms: float
    commit_ms: float

    @property
    def receipt_ms(self) -> float:
        """What a durable receipt adds to writing the file: its syncs and the ledger's commit."""
        return self.file_sync_ms + self.folder_sync_ms + self.commit_ms


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(incoming: Path, folder: Path, name: str, data: bytes, *, sync_file: bool, sync_folder: bool) -> float:
    start = time.perf_counter()
    temp = incoming / name
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        if sync_file:
            os.fsync(fd)
    finally:
        os.close(fd)
    temp.replace(folder / name)
    if sync_folder:
        _fsync_path(folder)
    return (time.perf_counter() - start) * 1000


def _commits(database: Path, count: int) -> list[float]:
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE receipt (id INTEGER PRIMARY KEY, body TEXT)")
        times = []
        for index in range(count):
            start = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO receipt (body) VALUES (?)", (f"receipt {index}",))
            conn.execute("COMMIT")
            times.append((time.perf_counter() - start) * 1000)
        return times
    finally:
        conn.close()


def measure(folder: Path, count: int = 100, size: int = INSTANCE_BYTES) -> SyncCosts:
    """Measure in a scratch folder below ``folder`` (removed afterwards)."""
    scratch = Path(tempfile.mkdtemp(prefix="guard-syncs-", dir=folder))
    try:
        incoming, study = scratch / ".incoming", scratch / "study"
        incoming.mkdir()
        study.mkdir()
        data = os.urandom(size)
        plain, synced, both = [], [], []
        for index in range(count):
            plain.append(_write(incoming, study, f"a{index}", data, sync_file=False, sync_folder=False))
            synced.append(_write(incoming, study, f"b{index}", data, sync_file=True, sync_folder=False))
            both.append(_write(incoming, study, f"c{index}", data, sync_file=True, sync_folder=True))
        commits = _commits(scratch / "ledger.db", count)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write = statistics.median(plain)
    file_sync = max(0.0, statistics.median(synced) - write)
    folder_sync = max(0.0, statistics.median(both) - statistics.median(synced))
    return SyncCosts(size, write, file_sync, folder_sync, statistics.median(commits))


def render(costs: SyncCosts) -> str:
    """One paragraph for the benchmark's header."""
    return (
        f"Storage (medians in the benchmark's folder, a {costs.size / 1e6:.2f} MB file): writing it {costs.write_ms:.2f} ms;"
        f" its fsync +{costs.file_sync_ms:.2f} ms; its folder's fsync after the rename +{costs.folder_sync_ms:.2f} ms;"
        f" an SQLite commit (WAL, synchronous=FULL) {costs.commit_ms:.2f} ms: the guard's durable receipt, three syncs,"
        f" {costs.receipt_ms:.2f} ms an instance; Orthanc with its defaults syncs once, the file (python -m bench.syncs)."
    )


def main(argv: list[str] | None = None) -> None:
    """Print what this storage charges for a durable receipt."""
    parser = argparse.ArgumentParser(prog="python -m bench.syncs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()), help="where to measure (default: the temporary folder)")
    parser.add_argument("--count", type=int, default=100, help="rounds (default 100)")
    parser.add_argument("--size", type=int, default=INSTANCE_BYTES, help=f"file size in bytes (default {INSTANCE_BYTES})")
    args = parser.parse_args(argv)
    print(render(measure(args.folder, args.count, args.size)))


if __name__ == "__main__":
    main()
