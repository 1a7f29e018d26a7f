"""The operating system's view of a thread: its name and its CPU priority.

A Python thread's name is the interpreter's alone; ``name_os_thread`` also gives it to the
kernel (``/proc/thread-self/comm``, at most 15 bytes), so that ``top -H``, ``ps -L`` and
``/proc/<pid>/task/*/comm`` show which of the guard's threads uses the CPU.

``lower_priority`` raises the calling thread's nice value (on Linux the nice value belongs to
the thread, and threads it starts inherit it). The forwarding workers use it so that, on a
busy machine, receiving (what the PACS waits for) gets the CPU first and forwarding (a durable
queue that catches up) after it; see ``forward.nice`` and ADR 0022. Lowering a priority needs
no privilege. Both are best effort: where the operating system does not offer them, nothing
changes and the caller goes on.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import structlog

log = structlog.get_logger("guard.runtime")

# The kernel keeps 15 bytes of a thread's name (TASK_COMM_LEN 16, with the terminating NUL).
_COMM_BYTES = 15
_LOWEST = 19


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` (its first 15 bytes) in the kernel's task list too."""
    with contextlib.suppress(OSError):
        Path("/proc/thread-self/comm").write_bytes(name.encode("ascii", "replace")[:_COMM_BYTES])


def lower_priority(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (capped at 19); a refusal is logged and changes nothing."""
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(_LOWEST, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError as exc:
        log.warning("thread.priority_unchanged", action="thread.priority_unchanged", thread=threading.current_thread().name, error=str(exc))
