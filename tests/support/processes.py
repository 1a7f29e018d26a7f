"""Start and stop peer processes: own log file, TCP_NODELAY, stop by our own pid only."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# Where Debian puts daemons such as Orthanc; not on PATH for every user.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_KILL_WAIT = 10.0
INSTALL_HINT = "run scripts/install-peers.sh (installs the Debian packages dcmtk and orthanc)"


class PeerError(RuntimeError):
    """A peer tool is missing, failed to start, or answered with an error."""


def find_tool(name: str) -> str:
    """Return the absolute path of executable ``name``, looking on PATH and in the sbin folders.

    The virtual environment's own ``bin`` is skipped: pynetdicom installs look-alike
    ``storescu``/``findscu`` scripts there, and the tests must run the real DCMTK tools.
    """
    venv_bin = str(Path(sys.prefix) / "bin")
    search = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != Path(venv_bin))
    found = shutil.which(name, path=search)
    if found:
        return found
    for folder in _SBIN_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    msg = f"{name} not found; {INSTALL_HINT}"
    raise PeerError(msg)


def peer_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment for a DCMTK or Orthanc process.

    Debian's DCMTK (and so Orthanc's DICOM side) sets TCP_NODELAY only when this variable
    says so; without it every response stalls about 43 ms on delayed ACK.
    """
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    if extra:
        env.update(extra)
    return env


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file, or a note when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<log {path} unreadable: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """One child process whose output goes to a log file, stopped only through its own pid."""

    def __init__(self, argv: Sequence[str], log_path: Path, *, cwd: Path | None = None) -> None:
        """Start ``argv`` with ``peer_env()``, appending stdout and stderr to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.argv = list(argv)
        self.log_path = log_path
        # Appending keeps the log of an earlier run of the same peer (restart tests).
        self._log = log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=peer_env(),
                cwd=cwd,
            )
        except OSError:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self._proc.pid

    def is_running(self) -> bool:
        """Tell whether the process has not exited yet."""
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Return the exit status, or None while running."""
        return self._proc.poll()

    def stop(self, grace: float = 10.0) -> int:
        """Terminate the process, kill it if it outlives ``grace`` seconds, and return its status.

        ``grace <= 0`` kills at once (SIGKILL), which is how a test simulates a crash.
        """
        try:
            if self._proc.poll() is None:
                if grace > 0:
                    self._proc.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._proc.wait(timeout=grace)
                if self._proc.poll() is None:
                    self._proc.kill()
                    # SIGKILL cannot be ignored; the bound only guards against a stuck kernel.
                    self._proc.wait(timeout=_KILL_WAIT)
            return self._proc.returncode
        finally:
            self._log.close()

    def describe(self) -> str:
        """Return the command, its state and the tail of its log, for error messages."""
        state = "running" if self.is_running() else f"exited with {self._proc.returncode}"
        return f"{' '.join(self.argv)} ({state}); log {self.log_path}:\n{log_tail(self.log_path)}"
