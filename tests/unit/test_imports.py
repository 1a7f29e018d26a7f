"""The entry point (``guard.app.imports``, ``guard.entry``): which modules ``guard serve`` keeps out, decided from its configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guard.app.imports import PIXEL_DATA, serve_keeps_out
from guard.config.settings import load_settings


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "guard.toml"
    path.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n[ledger]\nurl = "sqlite:///{tmp_path / "ledger.sqlite"}"\n{extra}')
    return path


def test_serve_keeps_numpy_out_unless_the_configuration_compares_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact comparison (the default): numpy kept out; ``verify.compare = content``: numpy kept in."""
    monkeypatch.delenv("GUARD_CONFIG", raising=False)
    (tmp_path / "exact").mkdir()
    (tmp_path / "content").mkdir()
    assert serve_keeps_out(load_settings(_config(tmp_path / "exact"))) == PIXEL_DATA
    assert serve_keeps_out(load_settings(_config(tmp_path / "content", '[verify]\ncompare = "content"\n'))) == ()


def test_a_configuration_that_does_not_load_is_exit_2_with_the_problem(tmp_path: Path) -> None:
    """A missing file: ``guard serve`` says what is wrong in one line (exit 2), without the command-line interface."""
    missing = tmp_path / "missing.toml"
    result = subprocess.run(
        [sys.executable, "-m", "guard", "serve", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"configuration file not found: {missing}"


def test_serve_takes_only_its_configuration_and_gives_its_help_from_the_interface() -> None:
    """An unknown option is a usage error (exit 2); ``--help`` is the command-line interface's own help."""
    unknown = subprocess.run([sys.executable, "-m", "guard", "serve", "--bogus"], capture_output=True, text=True, timeout=60, check=False)
    assert unknown.returncode == 2
    assert "unrecognized arguments: --bogus" in unknown.stderr
    helped = subprocess.run([sys.executable, "-m", "guard", "serve", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0
    assert "Run the guard until SIGTERM or SIGINT" in helped.stdout
    assert "--config" in helped.stdout


def test_deciding_loads_no_dicom_or_database_library(tmp_path: Path) -> None:
    """The configuration is read before pydicom (which would load numpy), pynetdicom or SQLAlchemy are imported."""
    probe = (
        "import sys\n"
        "from guard.config.settings import load_settings\n"
        "from guard.app.imports import serve_keeps_out\n"
        f"serve_keeps_out(load_settings(__import__('pathlib').Path({str(_config(tmp_path))!r})))\n"
        "print(' '.join(m for m in ('pydicom', 'pynetdicom', 'sqlalchemy', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == ""
