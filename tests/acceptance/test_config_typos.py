"""A typo in the configuration is never silent: ``guard config check`` and ``guard serve`` as real processes.

A misspelt key in the TOML file stops both commands with exit code 2, naming the key by its
section path and the key that was probably meant. A misspelt ``GUARD_*`` environment variable
does not stop the guard, but is listed by ``guard config check``, logged by ``guard serve`` and
recorded in its ``config.loaded`` audit record.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import GuardFactory
from tests.support.guard import render_toml
from tests.support.ports import free_port
from tests.support.waiting import port_is_open, wait_until

EXIT_CONFIG = 2
TYPO = "forward.workrs: unknown key; did you mean forward.workers?"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GUARD_")}
    env["COLUMNS"] = "200"
    return {**env, **extra}


def _guard(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "guard", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _typo_config(tmp_path: Path) -> Path:
    path = tmp_path / "guard.toml"
    path.write_text(
        f'[node]\nbind = "127.0.0.1"\nport = {free_port()}\ndata_dir = "{tmp_path / "data"}"\n\n[forward]\nworkrs = 4\n\n[http]\nport = 0\n'
    )
    return path


def test_config_check_refuses_a_misspelt_key(tmp_path: Path) -> None:
    """``guard config check`` exits 2 and names the misspelt key with the nearest valid one."""
    result = _guard("config", "check", "--config", str(_typo_config(tmp_path)), env=_env())
    assert (result.returncode, result.stdout) == (EXIT_CONFIG, "")
    assert TYPO in result.stderr


def test_serve_refuses_a_misspelt_key(tmp_path: Path) -> None:
    """``guard serve`` does not start on a file with a misspelt key: exit 2, the key named, the port never opened."""
    path = _typo_config(tmp_path)
    port = int(path.read_text().split("port = ")[1].split()[0])
    result = _guard("serve", "--config", str(path), env=_env())
    assert result.returncode == EXIT_CONFIG
    assert TYPO in result.stderr
    assert not port_is_open("127.0.0.1", port)
    assert not (tmp_path / "data").exists()


def test_config_check_lists_a_misspelt_variable(tmp_path: Path) -> None:
    """An unknown GUARD_* variable is listed, with the variable meant; known ones and GUARD_CONFIG are not."""
    path = tmp_path / "guard.toml"
    path.write_text("[node]\nport = 4104\n")
    env = _env(GUARD_CONFIG=str(path), GUARD_FORWRD__WORKERS="4", GUARD_ARCHIVE__PORT="4242")
    result = _guard("config", "check", env=env)
    assert result.returncode == 0, result.stderr
    assert "unknown environment variable GUARD_FORWRD__WORKERS ignored; did you mean GUARD_FORWARD__WORKERS?" in result.stderr
    assert "GUARD_ARCHIVE__PORT" not in result.stderr
    assert "GUARD_CONFIG" not in result.stderr
    assert '"workers": 1' in result.stdout


def test_serve_warns_about_and_audits_a_misspelt_variable(guard_factory: GuardFactory) -> None:
    """``guard serve`` starts despite an unknown GUARD_* variable, logs it and lists it in the config.loaded record."""
    guard = guard_factory(archive_port=free_port())
    guard.workdir.mkdir(parents=True)
    guard.config_path.write_text(render_toml(guard.config))
    with guard.log_path.open("ab") as log:
        guard.proc = subprocess.Popen(
            [sys.executable, "-m", "guard", "serve", "--config", str(guard.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(GUARD_FORWRD__WORKERS="4"),
        )

    def started() -> bool:
        if guard.proc is not None and guard.proc.poll() is not None:
            msg = f"guard exited with {guard.proc.returncode}:\n{guard.log_tail()}"
            raise RuntimeError(msg)
        return any(r.get("event") == "service.started" for r in guard.log_records())

    wait_until(started, 30, message=f"guard did not start:\n{guard.log_tail()}")
    warnings = [r for r in guard.log_records() if r.get("event") == "config.unknown_variable"]
    assert [(r["variable"], r["suggestion"]) for r in warnings] == [("GUARD_FORWRD__WORKERS", "GUARD_FORWARD__WORKERS")]
    [loaded] = guard.audit_records("config.loaded")
    assert loaded["detail"]["unknown_environment"] == ["GUARD_FORWRD__WORKERS"]
    assert guard.terminate() == 0
