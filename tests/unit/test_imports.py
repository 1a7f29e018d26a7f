"""The entry point (``guard.app.imports``, ``guard.entry``): which modules ``guard serve`` keeps out, decided from its configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from guard.app.imports import NEVER_USED, PIXEL_DATA, config_argument, serve_keeps_out


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "guard.toml"
    path.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n[ledger]\nurl = "sqlite:///{tmp_path / "ledger.sqlite"}"\n{extra}')
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", "a.toml"], Path("a.toml")),
        (["--config=b.toml"], Path("b.toml")),
        (["-c", "c.toml"], Path("c.toml")),
        ([], None),
        (["--config"], None),
    ],
)
def test_the_configuration_file_is_read_as_the_command_line_names_it(args: list[str], expected: Path | None) -> None:
    """``--config FILE``, ``--config=FILE`` and ``-c FILE``, as ``guard serve`` takes them; none: ``GUARD_CONFIG``."""
    assert config_argument(args) == expected


def test_serve_keeps_numpy_out_unless_the_configuration_compares_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact comparison (the default): numpy kept out; ``verify.compare = content``: numpy kept in; requests out either way."""
    monkeypatch.delenv("GUARD_CONFIG", raising=False)
    (tmp_path / "exact").mkdir()
    (tmp_path / "content").mkdir()
    assert serve_keeps_out(["--config", str(_config(tmp_path / "exact"))]) == NEVER_USED + PIXEL_DATA
    content = _config(tmp_path / "content", '[verify]\ncompare = "content"\n')
    assert serve_keeps_out(["--config", str(content)]) == NEVER_USED
    monkeypatch.setenv("GUARD_CONFIG", str(content))
    assert serve_keeps_out([]) == NEVER_USED


def test_a_configuration_that_does_not_load_keeps_numpy_in_and_serve_reports_it(tmp_path: Path) -> None:
    """A missing file: nothing but requests kept out here, and ``guard serve`` says what is wrong (exit 2)."""
    missing = tmp_path / "missing.toml"
    assert serve_keeps_out(["--config", str(missing)]) == NEVER_USED
    result = subprocess.run(
        [sys.executable, "-m", "guard", "serve", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "500"},  # one line, however long the path
    )
    assert result.returncode == 2
    assert "missing.toml" in result.stderr


def test_deciding_loads_no_dicom_or_database_library(tmp_path: Path) -> None:
    """The configuration is read before pydicom (which would load numpy), pynetdicom or SQLAlchemy are imported."""
    probe = (
        "import sys\n"
        "from guard.app.imports import serve_keeps_out\n"
        f"serve_keeps_out(['--config', {str(_config(tmp_path))!r}])\n"
        "print(' '.join(m for m in ('pydicom', 'pynetdicom', 'sqlalchemy', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == ""
