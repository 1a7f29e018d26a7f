"""``make test-container``: the guard's image built from a locally made Debian base and run with podman.

One scenario, as an administrator would run it: start the container with a data volume and
published ports, send a study with DCMTK ``storescu``, see it confirmed by the built-in
reference archive inside the container, read the audit log over HTTP from outside, run the
image's health check, stop it with SIGTERM and see a clean exit (0, ``service.stopped``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.container import podman as pm
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory
from tests.support.ports import free_port
from tests.support.waiting import wait_until

# Building the image takes minutes (see docs/development.md): far beyond the suite's default timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built once per run (base and wheels cached under var/container and docker/wheelhouse)."""
    pm.require_tools()
    started = time.monotonic()
    pm.make_base_image()
    based = time.monotonic()
    pm.fill_wheelhouse()
    wheeled = time.monotonic()
    pm.build_image()
    built = time.monotonic()
    print(f"\ncontainer timings: base image {based - started:.0f} s, wheels {wheeled - based:.0f} s, podman build {built - wheeled:.0f} s")
    return pm.IMAGE


class Container:
    """One running container, removed (by its own name) at teardown."""

    def __init__(self, name: str, dicom_port: int, http_port: int, data: Path) -> None:
        self.name, self.dicom_port, self.http_port, self.data = name, dicom_port, http_port, data

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def logs(self) -> str:
        done = pm.podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in pm.podman("logs", self.name, check=False).stdout.splitlines() if line.startswith("{")]

    def inspect(self, template: str) -> str:
        return pm.podman("inspect", "--format", template, self.name).stdout.strip()


@pytest.fixture
def container(image: str, tmp_path: Path) -> Iterator[Container]:
    """The guard's image running with a host folder as its volume and its two ports published on loopback."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 10001, 10001)  # the image's unprivileged user owns its volume
    box = Container(f"guard-test-{uuid.uuid4().hex[:8]}", free_port(), free_port(), data)
    pm.podman(
        "run",
        "--detach",
        "--name",
        box.name,
        "--network",
        "slirp4netns",
        "--publish",
        f"127.0.0.1:{box.dicom_port}:11112",
        "--publish",
        f"127.0.0.1:{box.http_port}:8080",
        "--volume",
        f"{data}:/data",
        "--env",
        'GUARD_SOURCES=[{"ae_title": "STORESCU"}]',
        "--env",
        "GUARD_DELETE__SOURCE_CHECK=false",  # storescu cannot answer C-FIND
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--stop-timeout",
        "30",
        image,
        timeout=120,
    )
    try:
        yield box
    finally:
        print(f"container log of {box.name} (last lines):\n" + "\n".join(box.logs().splitlines()[-15:]))
        pm.podman("rm", "--force", "--time", "5", box.name, check=False, timeout=60)


def _ready(box: Container) -> bool:
    if box.inspect("{{.State.Running}}") != "true":
        msg = f"container exited:\n{box.logs()[-3000:]}"
        raise AssertionError(msg)
    try:
        return httpx.get(box.url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_container_receives_confirms_audits_and_stops_cleanly_on_sigterm(container: Container, synthetic_study: StudyFactory) -> None:
    """A study from storescu is confirmed inside; /audit answers outside; the health check passes; SIGTERM gives exit 0."""
    box = container
    t0 = time.monotonic()
    wait_until(lambda: _ready(box), 90, interval=0.5, message="the container never became ready")
    print(f"container ready in {time.monotonic() - t0:.1f} s")
    assert box.inspect("{{.Config.User}}") == "guard"
    assert pm.podman("exec", box.name, "id", "-u").stdout.strip() == "10001"

    study = synthetic_study(3, patient_id="PAT-CONTAINER-7")
    sent = storescu("127.0.0.1", box.dicom_port, study.paths, calling_ae="STORESCU", called_ae="GUARD")
    assert store_responses(sent) == ["Success"] * 3, sent.stdout + sent.stderr

    def confirmed() -> dict[str, Any] | None:
        view = httpx.get(f"{box.url}/studies/{study.study_uid}", timeout=10).json()
        return view if view["counts"] == {"confirmed": 3} else None

    view = wait_until(confirmed, 60, interval=0.5, message="study not confirmed inside the container")
    assert view["deletable"]["decision"] == "permitted"
    for sop in study.sop_instance_uids:  # the archive's copies, on the volume, seen from the host
        assert (box.data / "reference-archive" / f"{sop}.dcm").is_file()
    assert (box.data / "ledger.sqlite").is_file()

    audit = httpx.get(f"{box.url}/audit", params={"study": study.study_uid, "limit": 1000}, timeout=10).json()["records"]
    events = [r["event"] for r in audit]
    assert events.count("instance.received") == 3
    assert events.count("instance.confirmed") == 3
    assert httpx.get(box.url + "/", timeout=10).status_code == 200  # the status page is served

    health = pm.podman("healthcheck", "run", box.name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    assert box.inspect("{{.Config.Healthcheck.Test}}") == "[CMD guard health --ready]"

    logs = box.logs()
    assert "PAT-CONTAINER-7" not in logs  # log.redact_patient_data is on in the image
    records = box.log_records()
    assert any(r.get("event") == "service.started" for r in records)

    t1 = time.monotonic()
    pm.podman("kill", "--signal", "TERM", box.name)
    exit_code = pm.podman("wait", box.name, timeout=60).stdout.strip()
    stopped_in = time.monotonic() - t1
    print(f"stopped {stopped_in:.1f} s after SIGTERM with exit code {exit_code}")
    assert exit_code == "0", box.logs()[-3000:]
    assert stopped_in < 30
    assert any(r.get("event") == "service.stopped" for r in box.log_records())
    non_json = [line for line in box.logs().splitlines() if line.strip() and not line.startswith("{")]
    assert non_json == []
