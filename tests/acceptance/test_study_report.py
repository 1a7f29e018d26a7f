"""One study report: ``guard status STUDY_UID --json`` and ``GET /studies/{uid}`` print the same facts and the same state.

A real guard process forwards a study to the reference archive and confirms it (C-FIND);
then the CLI and the admin API are asked about it, and about a study it never received.
"""

from __future__ import annotations

import json

import httpx
import pytest

from guard.domain import status as st
from guard.sandbox.archive import ReferenceArchive
from tests.acceptance.conftest import GuardFactory
from tests.support.fixtures import StudyFactory
from tests.support.ports import free_port
from tests.support.scu import send_files
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop

UNKNOWN = "1.2.826.0.1.3680043.10.1077.404"


def test_cli_and_api_report_the_same_study_state(
    guard_factory: GuardFactory, ref_archive: ReferenceArchive, synthetic_study: StudyFactory
) -> None:
    """A confirmed study is ``confirmed`` on both, an unknown one ``unknown``; every other field is the same too."""
    http_port = free_port()
    guard = guard_factory(archive_port=ref_archive.port, archive={"confirm": "find"}, http={"bind": "127.0.0.1", "port": http_port})
    guard.start()
    study = synthetic_study(2)
    assert [s for _, s in send_files(guard.port, study.paths)] == [st.SUCCESS] * 2
    wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="not confirmed")
    with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as api:
        for uid, state in ((study.study_uid, "confirmed"), (UNKNOWN, "unknown")):
            answer = api.get(f"/studies/{uid}")
            assert answer.status_code == 200, answer.text
            from_api = answer.json()
            from_api.pop("deletable")
            done = guard.cli("status", uid, "--json")
            assert done.returncode == 0, done.stderr
            from_cli = json.loads(done.stdout)
            assert from_api == from_cli
            assert from_cli["state"] == state
    assert from_cli["known"] is False
