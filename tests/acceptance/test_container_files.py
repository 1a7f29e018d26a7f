"""The container image's parts, tested without building it.

The Dockerfile's promises, the configuration the image's environment gives, the entry point
(config file pick-up, data folder check, SIGTERM reaching the guard), and the Orthanc
configurations of the compose demo.

The image itself is built and run by ``make test-container`` (tests/container).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from guard.config.settings import load_settings
from tests.support.ports import free_port
from tests.support.waiting import STARTUP_TIMEOUT, port_is_open, wait_until

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
ENTRYPOINT = DOCKER / "entrypoint.sh"


def _instructions(name: str) -> list[str]:
    """Arguments of every ``NAME`` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1].strip() for line in joined.splitlines() if line.upper().startswith(name + " ")]


def image_environment() -> dict[str, str]:
    """The ``ENV`` of the runtime stage (the last stage), as the container sees it."""
    runtime = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    joined = re.sub(r"\\\n\s*", " ", runtime)
    env: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_dockerfile_is_multi_stage_non_root_with_volume_ports_healthcheck_and_base_argument() -> None:
    """Base from ARG BASE (official slim Python by default), two stages, user guard, /data, 11112 and 8080, guard's health check."""
    assert _instructions("ARG")[0] == "BASE=python:3.11-slim"
    assert _instructions("FROM") == ["${BASE} AS build", "${BASE} AS runtime"]
    assert _instructions("USER") == ["guard"]
    assert _instructions("VOLUME") == ['["/data"]']
    assert _instructions("EXPOSE") == ["11112 8080"]
    assert _instructions("STOPSIGNAL") == ["SIGTERM"]
    (healthcheck,) = _instructions("HEALTHCHECK")
    assert healthcheck.endswith('CMD ["guard", "health", "--ready"]')
    assert _instructions("ENTRYPOINT") == ['["/usr/local/bin/guard-entrypoint"]']
    assert _instructions("CMD") == ['["serve"]']
    assert "COPY --from=build /opt/guard /opt/guard" in DOCKERFILE


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    """Every COPY source exists and is let through by .dockerignore (a wrong entry breaks `docker build`)."""
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for args in _instructions("COPY"):
        if args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            path = source.rstrip("/")
            assert (REPO / path).exists(), source
            assert any(path == a or path.startswith(a + "/") for a in allowed), f"{source} is excluded by .dockerignore"


def test_image_environment_gives_data_volume_open_bind_and_redacted_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's ENV alone is a valid configuration: data in /data, API on every interface, patient data out of the log."""
    for key in list(os.environ):
        if key.startswith("GUARD_"):
            monkeypatch.delenv(key)
    env = image_environment()
    assert env["GUARD_LOG__REDACT_PATIENT_DATA"] == "true"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(None)
    assert settings.node.data_dir == Path("/data")
    assert settings.ledger_url == "sqlite:////data/ledger.sqlite"
    assert settings.http.bind == "0.0.0.0"  # noqa: S104 - inside the container; publish it on the host's loopback
    assert settings.http.port == 8080
    assert settings.log.redact_patient_data is True


def _entrypoint_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["ENTRYPOINT_DEFAULT_CONFIG"] = str(tmp_path / "etc-guard.toml")
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def _run_entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_entrypoint_uses_the_mounted_config_file_and_environment_overrides_it(tmp_path: Path) -> None:
    """A file at the default config path is used without GUARD_CONFIG; GUARD_* variables win over it."""
    (tmp_path / "etc-guard.toml").write_text('[node]\nae_title = "FROMFILE"\n\n[archive]\nport = 4242\n')
    shown = _run_entrypoint(_entrypoint_env(tmp_path), "config", "check")
    assert shown.returncode == 0, shown.stderr
    assert '"ae_title": "FROMFILE"' in shown.stdout
    overridden = _run_entrypoint(_entrypoint_env(tmp_path, GUARD_NODE__AE_TITLE="FROMENV"), "config", "check")
    assert overridden.returncode == 0, overridden.stderr
    assert '"ae_title": "FROMENV"' in overridden.stdout
    assert '"port": 4242' in overridden.stdout


def test_entrypoint_refuses_an_unwritable_data_folder_with_the_fix(tmp_path: Path) -> None:
    """``serve`` with a data folder it cannot create says which folder and how to fix it, and exits 2."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    refused = _run_entrypoint(_entrypoint_env(tmp_path, GUARD_NODE__DATA_DIR=str(blocker / "data")), "serve")
    assert refused.returncode == 2
    assert f"the data folder {blocker / 'data'} is not writable" in refused.stderr
    assert "chown" in refused.stderr


def test_entrypoint_execs_the_guard_so_sigterm_stops_it_cleanly(tmp_path: Path) -> None:
    """The entry point replaces itself with ``guard serve``: SIGTERM to its pid stops the guard, exit 0, ``service.stopped`` logged."""
    port, http_port, archive_port = free_port(), free_port(), free_port()
    env = _entrypoint_env(
        tmp_path,
        GUARD_NODE__DATA_DIR=str(tmp_path / "data"),
        GUARD_NODE__BIND="127.0.0.1",
        GUARD_NODE__PORT=str(port),
        GUARD_ARCHIVE__PORT=str(archive_port),
        GUARD_HTTP__BIND="127.0.0.1",
        GUARD_HTTP__PORT=str(http_port),
    )
    log_path = tmp_path / "stdout.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(["sh", str(ENTRYPOINT)], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: port_is_open("127.0.0.1", http_port) or proc.poll() is not None, STARTUP_TIMEOUT, message="guard did not start")
        assert proc.poll() is None, log_path.read_text()
        health = _run_entrypoint(env, "health", "--ready")  # the image's HEALTHCHECK command
        assert health.returncode == 0, health.stdout + health.stderr
        assert Path(f"/proc/{proc.pid}/exe").readlink() != Path("/bin/sh")  # no shell left between the signal and the guard
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert records[-1]["event"] == "service.stopped"
    unhealthy = _run_entrypoint(env, "health", "--ready")
    assert unhealthy.returncode == 1


def test_compose_demo_orthanc_configs_are_valid_and_wired_to_the_guard() -> None:
    """The demo's Orthanc configurations parse; the archive lets the guard store, find and ask for commitment; the PACS routes to it."""
    archive = json.loads((DOCKER / "orthanc-archive.json").read_text())
    pacs = json.loads((DOCKER / "orthanc-pacs.json").read_text())
    guard_on_archive = archive["DicomModalities"]["guard"]
    assert guard_on_archive["AET"] == "GUARD"
    assert guard_on_archive["AllowStorageCommitment"] is True
    assert guard_on_archive["AllowFind"] is True
    assert pacs["DicomModalities"]["guard"]["AET"] == "GUARD"
    lua = (DOCKER / "pacs-route-to-guard.lua").read_text()
    assert 'SendToModality(instanceId, "guard")' in lua
    compose = (DOCKER / "compose.yaml").read_text()
    for name in ("orthanc-archive.json", "orthanc-pacs.json", "pacs-route-to-guard.lua", "guard-compose.toml"):
        assert f"./{name}:" in compose


def test_compose_file_wires_the_guard_config_to_the_services_addresses() -> None:
    """compose.yaml parses; the guard config's source, archive and delete URL are the PACS's and archive's fixed addresses."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    demo = tomllib.loads((DOCKER / "guard-compose.toml").read_text())
    services = compose["services"]
    address = {name: service["networks"]["demo"]["ipv4_address"] for name, service in services.items()}
    assert demo["sources"][0]["host"] == address["pacs"]
    assert demo["archive"]["host"] == address["archive"]
    assert demo["delete"]["url"] == f"http://{address['pacs']}:8042"
    guard = services["guard"]
    assert guard["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert "guard-data:/data" in guard["volumes"]
    assert "./guard-compose.toml:/etc/guard/guard.toml:ro" in guard["volumes"]
    assert guard["stop_grace_period"] == "30s"
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published
    assert all(port.startswith("127.0.0.1:") for port in published)  # nothing exposed beyond the workstation
