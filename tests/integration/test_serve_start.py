"""``guard serve``'s own start (``guard.app.serve_main``): the node runs without what only other commands load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

from guard.ledger.db import SCHEMA_REVISION
from tests.support.ports import free_port

#: Runs ``guard serve`` in this interpreter, as ``guard.entry`` does. A thread waits (bounded) for
#: the DICOM port to accept, names the modules the running node has loaded among those it must
#: not, and stops the node with SIGTERM; the exit code is the node's.
_PROBE = """
import os, signal, socket, sys, threading, time
from pathlib import Path
from guard.app import serve_main

unwanted = ("typer", "rich", "pygments", "alembic", "numpy", "requests", "guard.cli")

def look():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    print("loaded:", " ".join(m for m in unwanted if sys.modules.get(m) is not None), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=look, daemon=True).start()
sys.exit(serve_main.run(Path({config!r})))
"""


def test_a_node_started_on_a_new_ledger_runs_without_the_interface_alembic_or_numpy(tmp_path: Path) -> None:
    """Fresh ledger: migrated to the newest revision by a child; the node has no Typer, Rich, Pygments, Alembic, numpy or requests."""
    port = free_port()
    ledger = tmp_path / "ledger.sqlite"
    config = tmp_path / "guard.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\nport = {port}\n[ledger]\nurl = "sqlite:///{ledger}"\n[http]\nport = 0\n'
        f"[archive]\nport = {free_port()}\n"  # the built-in archive's
    )
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(port=port, config=str(config))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    looked = [line for line in result.stdout.splitlines() if line.startswith("loaded:")]
    assert looked == ["loaded: "], looked or result.stdout[-2000:]
    engine = create_engine(f"sqlite:///{ledger}")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_REVISION
    engine.dispose()


def test_a_node_that_cannot_start_says_why_in_one_line_and_exits_1(tmp_path: Path) -> None:
    """The DICOM port already taken: exit 1 and ``cannot start: ...`` on stderr (no traceback)."""
    import socket  # noqa: PLC0415 - only this test holds a port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "guard.toml"
        config.write_text(
            f'[node]\ndata_dir = "{tmp_path / "data"}"\nport = {port}\n'
            f'[ledger]\nurl = "sqlite:///{tmp_path / "l.sqlite"}"\n[http]\nport = 0\n[archive]\nport = {free_port()}\n'
        )
        result = subprocess.run(
            [sys.executable, "-m", "guard", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )
    assert result.returncode == 1
    assert "cannot start: " in result.stderr
    assert "Traceback" not in result.stderr
