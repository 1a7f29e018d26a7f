"""``make run``: the sandbox configuration works on a fresh machine with nothing else to set up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dcmtk import echoscu, store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.ports import free_port
from tests.support.waiting import STARTUP_TIMEOUT, port_is_open, wait_until

pytestmark = pytest.mark.interop

SANDBOX = Path(__file__).parents[2] / "config" / "sandbox.toml"


def test_sandbox_receives_forwards_to_the_builtin_archive_and_reports(tmp_path: Path, synthetic_study: StudyFactory) -> None:
    """Plain ``storescu HOST PORT file`` into the sandbox guard; ``guard status`` then shows it confirmed by the built-in archive."""
    port, archive_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    env |= {
        "GUARD_CONFIG": str(SANDBOX),
        "GUARD_NODE__PORT": str(port),
        "GUARD_NODE__DATA_DIR": str(tmp_path / "var"),
        "GUARD_ARCHIVE__PORT": str(archive_port),
        "GUARD_HTTP__PORT": "0",
        "COLUMNS": "200",
    }
    log = (tmp_path / "guard.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "guard", "serve"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(
            lambda: port_is_open("127.0.0.1", port) or proc.poll() is not None, STARTUP_TIMEOUT, message="sandbox guard did not start"
        )
        assert proc.poll() is None, (tmp_path / "guard.log").read_text()
        assert echoscu("127.0.0.1", port, calling_ae="STORESCU").returncode == 0
        study = synthetic_study(2)
        result = storescu("127.0.0.1", port, study.paths[0], calling_ae="STORESCU", called_ae="ANY-SCP")
        assert store_responses(result) == ["Success"]

        def forwarded() -> bool:
            done = subprocess.run(
                [sys.executable, "-m", "guard", "status", study.study_uid, "--json"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
                timeout=60,
            )
            return json.loads(done.stdout)["counts"] == {"confirmed": 1}

        wait_until(forwarded, 30, message="instance not confirmed by the sandbox archive")
        assert (tmp_path / "var" / "reference-archive" / f"{study.sop_instance_uids[0]}.dcm").is_file()
        deleted = subprocess.run(
            [sys.executable, "-m", "guard", "delete", study.study_uid], capture_output=True, text=True, env=env, check=False, timeout=60
        )
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        assert "permitted" in deleted.stdout
        text = subprocess.run(
            [sys.executable, "-m", "guard", "status"], capture_output=True, text=True, env=env, check=True, timeout=60
        ).stdout
        assert study.study_uid in text
        lines = [json.loads(line) for line in (tmp_path / "guard.log").read_text().splitlines() if line.startswith("{")]
        assert any(r["event"] == "archive.builtin" and r["level"] == "warning" for r in lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()
