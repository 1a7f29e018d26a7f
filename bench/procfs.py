"""Memory and CPU figures read from ``/proc`` (Linux only), for the guard process and the machine.

``VmHWM`` in ``/proc/<pid>/status`` is the peak resident set size of a process over its whole
life, kept by the kernel: read just before the process is stopped, it is the figure the
benchmark reports. ``RssSampler`` samples ``VmRSS`` meanwhile as a cross-check.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

KIB = 1024
MIB = 1024 * 1024
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Fields 14 and 15 of /proc/<pid>/stat (utime, stime), counted after the ")" ending field 2.
_UTIME_AFTER_COMM = 11
_STIME_AFTER_COMM = 12
# Columns of the "cpu" line of /proc/stat that are idle time: idle and iowait.
_IDLE_COLUMNS = (3, 4)


def status_kib(pid: int, field: str) -> int | None:
    """Return a ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/<pid>/status``, or None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    return None


def cpu_seconds(pid: int) -> float | None:
    """Return the user plus system CPU time of process ``pid`` in seconds, or None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces; everything after its closing ")" is plain.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[_UTIME_AFTER_COMM]) + int(fields[_STIME_AFTER_COMM])) / _CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (the guard's listener process, when it runs one), from ``/proc``."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text(encoding="ascii").split()
        except OSError:
            continue
        todo.extend(int(child) for child in children)
    return found


def tree_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of ``pid`` and its live descendants, in seconds (None if ``pid`` is unreadable)."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(cpu_seconds(child) or 0.0 for child in process_tree(pid)[1:])


def tree_status_parts_kib(pid: int, field: str) -> tuple[int, ...]:
    """A ``kB`` field of ``/proc/<pid>/status`` for ``pid`` and each live descendant, ``pid`` first (unreadable ones left out)."""
    values = (status_kib(member, field) for member in process_tree(pid))
    return tuple(value for value in values if value is not None)


def tree_status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` summed over ``pid`` and its live descendants."""
    own = status_kib(pid, field)
    if own is None:
        return None
    return own + sum(status_kib(child, field) or 0 for child in process_tree(pid)[1:])


@dataclass(frozen=True)
class MachineCpu:
    """Cumulative CPU time of the whole machine (all cores), in clock ticks."""

    busy: int
    total: int

    @classmethod
    def now(cls) -> MachineCpu:
        """Read the ``cpu`` line of ``/proc/stat``."""
        first = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0]
        ticks = [int(value) for value in first.split()[1:]]
        idle = sum(ticks[i] for i in _IDLE_COLUMNS if i < len(ticks))
        return cls(busy=sum(ticks) - idle, total=sum(ticks))

    def busy_percent_since(self, earlier: MachineCpu) -> float:
        """Share of all cores' time spent busy between ``earlier`` and this reading (100 = every core busy)."""
        total = self.total - earlier.total
        return 100.0 * (self.busy - earlier.busy) / total if total > 0 else 0.0


class RssSampler:
    """A thread that samples ``VmRSS`` of one process and its descendants, summed, and keeps the maximum (in KiB).

    Use as a context manager around the measured interval; ``max_kib`` is 0 when the process
    could never be read.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        """Sample process ``pid`` (with its listener process, if any) every ``interval`` seconds once started."""
        self.pid = pid
        self.interval = interval
        self.max_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _sample(self) -> None:
        value = tree_status_kib(self.pid, "VmRSS")
        if value is not None:
            self.max_kib = max(self.max_kib, value)
            self.samples += 1

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Self:
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Stop sampling, taking one last sample."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()


def settle(pid: int, *, window: float = 0.2, busy_share: float = 0.05, timeout: float = 10.0) -> None:
    """Wait until ``pid`` and its descendants use under ``busy_share`` of a core over ``window`` seconds (at most ``timeout``).

    A guard that has just started finishes its start-up after its ports open (it collects and
    freezes its heap, ``guard.runtime.freeze_heap``: a few hundred milliseconds of CPU); measured
    from then, that one-off cost would be counted in every instance of the run.
    """
    deadline = time.monotonic() + timeout
    last = tree_cpu_seconds(pid)
    while last is not None and time.monotonic() < deadline:
        time.sleep(window)
        now = tree_cpu_seconds(pid)
        if now is None or now - last < busy_share * window:
            return
        last = now
