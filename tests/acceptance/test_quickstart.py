"""A new user follows the README and docs/quickstart.md on a fresh clone.

The clone is made with ``git clone`` of this repository (what is committed, nothing else), then
the quick start is followed: ``make run``, ``storescu`` of an image, ``guard status``,
``guard delete`` of a study the guard never received (refused, exit 3), and of the sent study
once the built-in archive has confirmed it (permitted, exit 0), then Ctrl-C.

One shortcut, so the test takes seconds and needs no network: instead of letting ``make`` create
``.venv`` and ``pip install`` the pinned dependencies again, the clone's ``.venv`` is a fresh
virtual environment whose path holds the clone's own sources first and then the site-packages
of the environment running the tests (the same pinned versions), with ``make``'s install stamp
in place. Everything the user runs is the clone's code, through the clone's Makefile and
configuration. Ports are moved to free ones with ``GUARD_*`` variables, as the configuration
reference allows, so the test can run beside anything else.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest

from tests.support.availability import unavailable
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.ports import free_port
from tests.support.waiting import STARTUP_TIMEOUT, port_is_open, wait_until

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]


def _fresh_clone(target: Path) -> Path:
    if shutil.which("git") is None or shutil.which("make") is None:
        unavailable("git and make are needed to follow the quick start")
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True, timeout=120)
    return target


def _venv_on_installed_dependencies(clone: Path) -> None:
    """``.venv`` of the clone: its sources first, then the pinned dependencies already installed (see the module docstring)."""
    env_dir = clone / ".venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    own_site = env_dir / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (own_site / "guard-quickstart.pth").write_text(f"{clone}\n" + "\n".join(site.getsitepackages()) + "\n")
    script = env_dir / "bin" / "guard"
    script.write_text(f"#!{env_dir / 'bin' / 'python'}\nimport sys\nfrom guard.cli.main import main\nsys.exit(main())\n")
    script.chmod(0o755)
    (env_dir / ".installed").touch()  # make's stamp: dependencies are installed


def _run(clone: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), cwd=clone, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_fresh_clone_make_run_confirms_a_study_and_the_delete_gate_refuses_then_permits(
    tmp_path: Path, synthetic_study: StudyFactory
) -> None:
    """Clone, make run, storescu: the study is confirmed; guard delete of an unknown study exits 3, of the confirmed one exits 0."""
    readme = (REPO / "README.md").read_text()
    quickstart = (REPO / "docs" / "quickstart.md").read_text()
    for documented in ("make run", "storescu 127.0.0.1 11112", ".venv/bin/guard status --config config/sandbox.toml"):
        assert documented in readme or documented in quickstart, documented
    assert ".venv/bin/guard delete --config config/sandbox.toml" in quickstart

    clone = _fresh_clone(tmp_path / "guard")
    _venv_on_installed_dependencies(clone)
    port, archive_port, http_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    env |= {"GUARD_NODE__PORT": str(port), "GUARD_ARCHIVE__PORT": str(archive_port), "GUARD_HTTP__PORT": str(http_port)}
    env |= {"COLUMNS": "200", "MAKEFLAGS": ""}

    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        # Its own session: Ctrl-C reaches make and the guard together, as in a terminal.
        make = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(
            lambda: port_is_open("127.0.0.1", http_port) or make.poll() is not None, STARTUP_TIMEOUT, message="make run did not start"
        )
        assert make.poll() is None, log_path.read_text()[-3000:]
        assert (clone / "var" / "ledger.sqlite").is_file()  # the sandbox keeps everything under the clone's var/

        unknown = "1.2.826.0.1.3680043.10.1077.424242"
        refused = _run(clone, env, ".venv/bin/guard", "delete", "--config", "config/sandbox.toml", unknown)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "unknown-study" in refused.stdout

        study = synthetic_study(2)
        sent = storescu("127.0.0.1", port, study.paths, calling_ae="STORESCU", called_ae="ANY-SCP")  # storescu's own defaults
        assert store_responses(sent) == ["Success", "Success"], sent.stdout + sent.stderr

        def confirmed() -> bool:
            shown = _run(clone, env, ".venv/bin/guard", "status", "--config", "config/sandbox.toml", study.study_uid, "--json")
            return shown.returncode == 0 and json.loads(shown.stdout)["counts"] == {"confirmed": 2}

        wait_until(confirmed, 60, interval=0.5, message="the study was not confirmed by the built-in archive")
        view = httpx.get(f"http://127.0.0.1:{http_port}/studies/{study.study_uid}", timeout=30).json()
        assert view["deletable"]["decision"] == "permitted"
        permitted = _run(clone, env, ".venv/bin/guard", "delete", "--config", "config/sandbox.toml", study.study_uid)
        assert permitted.returncode == 0, permitted.stdout + permitted.stderr
        assert "permitted" in permitted.stdout
        overview = _run(clone, env, ".venv/bin/guard", "status", "--config", "config/sandbox.toml")
        assert study.study_uid in overview.stdout
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)  # Ctrl-C
            try:
                make.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait(10)
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert records[-1]["event"] == "service.stopped", log_path.read_text()[-2000:]
    assert any(r["event"] == "archive.builtin" for r in records)  # the sandbox says loudly it is one
