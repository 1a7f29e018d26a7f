"""Small tmpfs mounts for fault tests: a file system that really fills up or turns read-only (needs root, as in CI)."""

from __future__ import annotations

import errno
import shutil
import subprocess
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tests.support.availability import unavailable

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@contextmanager
def tmpfs(mount_point: Path, options: str = "size=4m") -> Iterator[Path]:
    """Mount a tmpfs with ``options`` (e.g. ``size=2m,nr_inodes=16``) on ``mount_point``; unmounted at the end."""
    mount_point.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        unavailable("mount(8) not available")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs (needs root, as in CI): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def remount(mount_point: Path, mode: str) -> None:
    """Remount ``mount_point`` read-only (``ro``) or read-write (``rw``)."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount_point)], check=True)


def use_up_inodes(folder: Path) -> int:
    """Create empty files in ``folder`` until the file system has no inode left; how many were made."""
    made = 0
    while True:
        try:
            (folder / f"filler-{made}").touch()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return made
        made += 1
