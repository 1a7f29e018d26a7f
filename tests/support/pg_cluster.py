"""A private PostgreSQL cluster a test may stop and start: ``initdb`` and ``pg_ctl`` from Debian's packages.

The shared test server must never be stopped; a test that needs the database to go away runs
its own cluster instead, in a temporary folder, on a free loopback port, with trust
authentication. PostgreSQL refuses to run as root, so when the tests run as root the cluster
runs as the ``postgres`` user (``runuser``) in a folder that user owns. ``pg_ctl`` waits for
the server to accept connections on start (``-w``) and to be gone on stop; it signals only the
postmaster recorded in this cluster's own ``postmaster.pid``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from tests.support.availability import unavailable
from tests.support.ports import LOOPBACK, free_port

_TIMEOUT = 60


def _bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb`` and ``pg_ctl``."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*/bin") if (p / "initdb").exists() and (p / "pg_ctl").exists()), reverse=True)
    return versions[0] if versions else None


class PrivateCluster:
    """One PostgreSQL cluster of the test's own; ``url`` reaches its ``postgres`` database."""

    def __init__(self, bin_dir: Path, folder: Path, user: str | None) -> None:
        """Use the tools in ``bin_dir`` and keep everything in ``folder``; run as ``user`` (None: as ourselves)."""
        self.bin_dir = bin_dir
        self.folder = folder
        self.user = user
        self.data = folder / "data"
        self.log = folder / "server.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the cluster's ``postgres`` database."""
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/postgres?connect_timeout=3"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=_TIMEOUT, check=False, cwd=self.folder)
        if done.returncode != 0:
            msg = f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stdout}{done.stderr}"
            raise RuntimeError(msg)

    def init(self) -> Self:
        """Create the cluster (trust authentication, superuser ``postgres``, loopback only)."""
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> Self:
        """Start the server and wait until it accepts connections."""
        options = f"-c listen_addresses={LOOPBACK} -p {self.port} -k {self.folder} -c fsync=off"
        pg_ctl = str(self.bin_dir / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", str(_TIMEOUT), "start")
        return self

    def stop(self) -> None:
        """Stop the server (fast: open sessions are ended) and wait until it is gone."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", str(_TIMEOUT), "stop")


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started private cluster, stopped and removed afterwards; skips (fails under CI) without the tools."""
    bin_dir = _bin_dir()
    if bin_dir is None or shutil.which("runuser") is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl under /usr/lib/postgresql/*/bin) not installed")
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no postgres user to run PostgreSQL as")
        user = "postgres"
    # Not under pytest's tmp_path: its parents are private to root, and the postgres user must reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="guard-pg-"))
    if user is not None:
        shutil.chown(folder, user)
    cluster = PrivateCluster(bin_dir, folder, user)
    try:
        yield cluster.init().start()
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
