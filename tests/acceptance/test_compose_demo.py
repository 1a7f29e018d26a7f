"""The compose demo's wiring, run without Docker: its own configuration files on real processes.

``docker/compose.yaml`` runs an Orthanc PACS, the guard and an Orthanc archive. Here the same
``docker/orthanc-pacs.json`` (with its Lua route), ``docker/orthanc-archive.json`` and
``docker/guard-compose.toml`` drive local processes; only addresses, ports and folders are
moved to this machine's loopback. What the demo promises must happen: an image sent to the PACS
reaches the guard by the PACS's route, is confirmed by the archive's Storage Commitment, and the
delete through the guard is carried out on the PACS by Orthanc's REST API while the archive keeps
its copy.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import GuardFactory
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory, require_tools
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop

DOCKER = Path(__file__).resolve().parents[2] / "docker"
TOKEN = "compose-demo-test-token"
#: Keys the test harness sets itself (names, ports, folders, network exposure).
HARNESS_KEYS = {"Name", "StorageDirectory", "IndexDirectory", "DicomPort", "HttpPort", "RemoteAccessAllowed", "DicomModalities"}


def _orthanc_extra(name: str, guard_port: int) -> tuple[str, dict[str, Any], dict[str, tuple[str, str, int]]]:
    """The demo file's AE title, its other settings, and its modalities moved to loopback."""
    config = json.loads((DOCKER / name).read_text())
    extra = {k: v for k, v in config.items() if k not in HARNESS_KEYS}
    if "LuaScripts" in extra:
        extra["LuaScripts"] = [str(DOCKER / Path(p).name) for p in extra["LuaScripts"]]
    modalities = {key: (m["AET"], "127.0.0.1", guard_port) for key, m in config["DicomModalities"].items()}
    return config["DicomAet"], extra, modalities


def test_compose_demo_pacs_routes_to_guard_archive_confirms_and_the_delete_is_carried_out_on_the_pacs(
    guard_factory: GuardFactory, synthetic_study: StudyFactory, tmp_path: Path
) -> None:
    """The demo's own configurations: PACS -> guard -> archive, confirmed; DELETE through the guard removes the study from the PACS only."""
    require_tools("Orthanc", "storescu")
    demo = tomllib.loads((DOCKER / "guard-compose.toml").read_text())
    guard_port, http_port = free_port(), free_port()
    archive_ae, archive_extra, archive_modalities = _orthanc_extra("orthanc-archive.json", guard_port)
    pacs_ae, pacs_extra, pacs_modalities = _orthanc_extra("orthanc-pacs.json", guard_port)
    assert (archive_ae, pacs_ae) == (demo["archive"]["ae_title"], demo["sources"][0]["ae_title"])

    with (
        Orthanc(tmp_path / "archive", aet=archive_ae, modalities=archive_modalities, extra_config=archive_extra) as archive,
        Orthanc(tmp_path / "pacs", aet=pacs_ae, modalities=pacs_modalities, extra_config=pacs_extra) as pacs,
    ):
        guard = guard_factory(
            archive_port=archive.dicom_port,
            archive_ae=archive_ae,
            node={"ae_title": demo["node"]["ae_title"]},
            sources=[{**demo["sources"][0], "host": "127.0.0.1", "port": pacs.dicom_port}],
            archive={"confirm": demo["archive"]["confirm"]},
            delete={**demo["delete"], "url": pacs.url},
            http={"bind": "127.0.0.1", "port": http_port, "token": TOKEN},
        )
        # The Orthancs were configured with the guard's port before the guard existed.
        guard.port = guard.config["node"]["port"] = guard_port
        guard.start()

        study = synthetic_study(3)
        sent = storescu("127.0.0.1", pacs.dicom_port, study.paths, calling_ae="MODALITY", called_ae=pacs_ae)
        assert store_responses(sent) == ["Success"] * 3, sent.stdout + sent.stderr

        def all_confirmed() -> bool:
            states = guard.instance_states()
            return len(states) == 3 and set(states.values()) == {"confirmed"}

        wait_until(all_confirmed, 90, interval=0.5, message="the PACS's route or the archive's commitment did not work")
        received = guard.audit_records("instance.received")
        assert {r["actor"] for r in received} == {pacs_ae}  # it came by the PACS's route
        assert archive.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids)

        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as api:
            answer = api.delete(f"/studies/{study.study_uid}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["backend"] == "orthanc"
        assert pacs.instance_uids_of_study(study.study_uid) == set()
        assert archive.instance_uids_of_study(study.study_uid) == set(study.sop_instance_uids)
        guard.stop()
