"""``guard`` processes forked from a server that has imported the guard's libraries once.

Starting ``python -m guard`` costs about 1.5 s of CPU in imports (pydicom, pynetdicom,
SQLAlchemy, FastAPI, pydantic) before the guard does anything, and the suite starts well over
a hundred ``guard serve`` processes and more CLI calls. Here each one is forked from
multiprocessing's forkserver, which imported those libraries once per test process
(``PRELOAD``). From ``guard.cli.main.main()`` on it is the same program as ``python -m guard``:
a process of its own with its own pid, environment, working folder and output files, and
signals (SIGTERM, SIGHUP, SIGSTOP, SIGKILL) reach it as any process. What it skips is the
interpreter start and those imports; ``python -m guard`` as a fresh interpreter is still run by
the tests of the listener process, of the sandbox (``make run``), of configuration typos, of
``guard token hash`` and of the container entry point.

The guard's own command-line modules (``guard.cli``) are not preloaded: they build their rich
consoles at import, from ``COLUMNS`` and the output they find, so each child imports them itself.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
from multiprocessing import forkserver
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from multiprocessing.context import ForkServerProcess

#: What the forkserver imports once: everything ``guard serve`` and the CLI commands need, but ``guard.cli``.
PRELOAD = [
    "pydicom",
    "pynetdicom",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "fastapi",
    "uvicorn",
    "httpx",
    "typer",
    "rich.console",
    "rich.table",
    "rich.progress",
    "guard.app",
    "guard.app.listener_process",
    "guard.sandbox.archive",
]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)
_started = threading.Lock()
_stop_registered: list[bool] = []


def _stop_server() -> None:
    """Stop the forkserver (at exit) and wait for it, so its CPU time is counted like any child's."""
    server = getattr(forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if stop is not None:
        stop()


def _main(argv: list[str], env: dict[str, str], cwd: str, stdout: str, stderr: str | None, stdin: str | None) -> None:
    """In the child: the given output files, environment and folder, then ``guard.cli.main.main()`` with ``argv``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    out = os.open(stdout, flags, 0o644)
    err = out if stderr is None else os.open(stderr, flags, 0o644)
    source = os.open(stdin or os.devnull, os.O_RDONLY)
    os.dup2(source, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in {source, out, err}:
        os.close(fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - the process's standard input, as Python opens it
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = ["guard", *argv]
    from guard.cli.main import main  # noqa: PLC0415 - imported in the child, after its environment is set

    main()


class ForkedProcess:
    """A forked ``guard`` process, used like ``subprocess.Popen``: ``pid``, ``poll``, ``wait``, ``send_signal``, ``kill``."""

    def __init__(self, process: ForkServerProcess, argv: Sequence[str]) -> None:
        """Wrap a started ``process`` running ``guard`` with ``argv``."""
        self._process = process
        self.args = ["guard", *argv]

    @property
    def pid(self) -> int:
        """The process id."""
        pid = self._process.pid
        assert pid is not None
        return pid

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: the signal that ended it), None while it runs."""
        return self._process.exitcode

    def poll(self) -> int | None:
        """The exit status if it has ended, else None."""
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to this process (by its pid)."""
        if self._process.exitcode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        """SIGTERM."""
        self._process.terminate()

    def kill(self) -> None:
        """SIGKILL."""
        self._process.kill()


def start_guard(
    argv: Sequence[str], *, env: Mapping[str, str], stdout: Path, stderr: Path | None = None, stdin: Path | None = None
) -> ForkedProcess:
    """Start ``guard`` with ``argv`` writing to ``stdout`` (and ``stderr``, else the same file), in this process's folder."""
    with _started:
        if not _stop_registered:
            atexit.register(_stop_server)
            _stop_registered.append(True)
        process = _context.Process(
            target=_main,
            args=(list(argv), dict(env), str(Path.cwd()), str(stdout), None if stderr is None else str(stderr), stdin and str(stdin)),
            daemon=True,
        )
        process.start()
    return ForkedProcess(process, argv)


def run_guard(
    argv: Sequence[str], *, env: Mapping[str, str], timeout: float, stdin_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``guard`` with ``argv`` to its end, like ``subprocess.run(..., capture_output=True, text=True)``."""
    with tempfile.TemporaryDirectory(prefix="guard-cli-") as folder:
        out, err, source = Path(folder) / "stdout", Path(folder) / "stderr", Path(folder) / "stdin"
        if stdin_text is not None:
            source.write_text(stdin_text, encoding="utf-8")
        process = start_guard(argv, env=env, stdout=out, stderr=err, stdin=source if stdin_text is not None else None)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise
        return subprocess.CompletedProcess(process.args, code, out.read_text(errors="replace"), err.read_text(errors="replace"))
