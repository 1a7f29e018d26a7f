"""A ledger outage on the read paths: the guard runs on a private PostgreSQL cluster that the test stops.

The shared test server is never stopped; ``tests.support.pg_cluster`` gives this test a
cluster of its own. With the database gone, every read endpoint of the admin API answers 503
with the ``ledger-unavailable`` problem type (not 500), and every reading command of the CLI
exits non-zero with one clear line; once the database is back, the same reads answer again.
"""

from __future__ import annotations

import httpx
import pytest

from guard.sandbox.archive import ReferenceArchive
from tests.acceptance.conftest import GuardFactory
from tests.support.pg_cluster import private_cluster
from tests.support.ports import free_port
from tests.support.waiting import wait_until

STUDY = "1.2.826.0.1.3680043.10.1077.900"
PROBLEM = "urn:guard:problem:ledger-unavailable"
READS = (f"/studies/{STUDY}", "/audit", f"/audit?study={STUDY}", "/status")
COMMANDS = (("status", STUDY), ("status", STUDY, "--json"), ("audit",), ("audit", "verify"), ("delete", STUDY))
TOKEN = "outage-admin-token"


def _answers(base: str) -> dict[str, int]:
    with httpx.Client(base_url=base, timeout=30) as client:
        return {path: client.get(path).status_code for path in READS}


@pytest.mark.timeout(240)
def test_reads_answer_503_and_the_cli_fails_clearly_while_the_ledger_is_down(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive
) -> None:
    """Database stopped: reads answer 503 ledger-unavailable, deletes 401 or 503 (never permitted); the CLI exits 1 with one line."""
    with private_cluster() as cluster:
        http_port = free_port()
        guard = guard_factory(
            archive_port=ref_archive.port, ledger_url=cluster.url, http={"bind": "127.0.0.1", "port": http_port, "token": TOKEN}
        )
        guard.start()
        base = f"http://127.0.0.1:{http_port}"
        assert set(_answers(base).values()) == {200}

        cluster.stop()
        with httpx.Client(base_url=base, timeout=30) as client:
            for path in READS:
                answer = client.get(path)
                assert (path, 503) == (path, answer.status_code), answer.text
                assert answer.headers["content-type"].startswith("application/problem+json")
                assert answer.json()["type"] == PROBLEM
            assert client.get("/readyz").status_code == 503
            # A delete is refused either way: without a token 401 (the alert only logged), with one 503, never permitted.
            assert client.delete(f"/studies/{STUDY}").status_code == 401
            refused = client.delete(f"/studies/{STUDY}", headers={"Authorization": f"Bearer {TOKEN}"})
            assert (refused.status_code, refused.json()["type"]) == (503, PROBLEM)
            assert "guard_ledger_up 0.0" in client.get("/metrics").text
        for command in COMMANDS:
            done = guard.cli(*command)
            assert (command, 1) == (command, done.returncode), done.stdout + done.stderr
            assert "Traceback" not in done.stderr
            lines = [line for line in done.stderr.splitlines() if "ledger is unavailable" in line]
            assert len(lines) == 1, done.stderr

        unwritten = [r for r in guard.log_records() if r.get("event") == "audit.unwritable"]
        assert any(r.get("alert") == "bad-token" for r in unwritten)

        cluster.start()
        wait_until(lambda: set(_answers(base).values()) == {200}, 30, interval=0.5, message="reads did not recover")
        assert guard.cli("status", STUDY, "--json").returncode == 0
        guard.terminate()
