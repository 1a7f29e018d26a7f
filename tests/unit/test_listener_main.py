"""The listener process's entry point (``guard.app.listener_main``): what it loads, and how it refuses to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: Imports the listener's own modules in a fresh interpreter, as ``python -m guard listener`` does, and names what got loaded.
_PROBE = """
import sys
from guard.app.listener_main import NOT_LOADED
for name in NOT_LOADED:
    sys.modules[name] = None
import guard.app.listener_child
unwanted = {"typer", "rich", "pygments", "alembic", "fastapi", "uvicorn", "numpy", "requests"}
print(" ".join(sorted({m.split(".")[0] for m, module in sys.modules.items() if m.split(".")[0] in unwanted and module is not None})))
"""


def test_the_listener_modules_need_no_command_line_interface_migrations_web_server_or_numpy() -> None:
    """Typer, Rich, Pygments, Alembic, FastAPI, uvicorn, numpy and requests stay out of a listener process."""
    probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    assert probe.stdout.strip() == ""


def test_without_the_channel_it_refuses_to_start(tmp_path: Path) -> None:
    """Run by hand (no channel from guard serve): exit 1 and one line saying who starts it."""
    config = tmp_path / "guard.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n[ledger]\nurl = "sqlite:///{tmp_path / "ledger.sqlite"}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "guard", "listener", "--config", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "started by guard serve" in result.stderr


def test_a_configuration_error_is_exit_2_with_the_problem(tmp_path: Path) -> None:
    """A configuration file that does not exist: exit 2, the file named."""
    result = subprocess.run(
        [sys.executable, "-m", "guard", "listener", "--config", str(tmp_path / "missing.toml"), "--channel-fd", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "missing.toml" in result.stderr
