"""Run the guard as a real process (``guard serve``) with its own configuration and data folder.

The process is forked from a server that imported the guard's libraries once
(``tests.support.forked``), or with ``fresh=True`` started as ``python -m guard`` in a new
interpreter; its JSON log goes to a file, readiness is the ``service.started`` audit line plus
an open DICOM port, and it is stopped by its own pid: SIGTERM for a clean stop, SIGKILL to
simulate a crash. ``cli`` runs a ``guard`` command the same way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Engine, create_engine, select

from guard.config.settings import NodeSettings
from guard.ledger.schema import audit_log, instances
from tests.support import catalogue, forked
from tests.support.ports import free_port
from tests.support.waiting import STARTUP_TIMEOUT, port_is_open, wait_until

GUARD_AE = "GUARD"
SOURCE_AE = "STORESCU"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def render_toml(config: dict[str, Any]) -> str:
    """A small TOML writer for the shapes the guard's configuration uses."""
    lines: list[str] = []
    for section, body in config.items():
        if isinstance(body, list):
            for entry in body:
                lines.append(f"[[{section}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in entry.items())
        else:
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in body.items())
        lines.append("")
    return "\n".join(lines)


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` from /proc, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def children_of(pid: int) -> list[int]:
    """The pids of ``pid``'s live child processes, from /proc."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit() and parent_of(int(entry.name)) == pid]


class GuardProcess:
    """One ``guard serve`` process under test."""

    def __init__(
        self,
        workdir: Path,
        *,
        archive_port: int,
        archive_ae: str = "ARCHIVE",
        ledger_url: str | None = None,
        fresh: bool = False,
        **overrides: dict[str, Any],
    ) -> None:
        """Configure (not start) a guard; ``fresh``: start it and its commands as ``python -m guard``, a new interpreter each."""
        self.workdir = workdir
        self.fresh = fresh
        self.port = free_port()
        self.data_dir = workdir / "data"
        self.config: dict[str, Any] = {
            "node": {"ae_title": GUARD_AE, "bind": "127.0.0.1", "port": self.port, "data_dir": str(self.data_dir)},
            "ledger": {"url": ledger_url or f"sqlite:///{workdir / 'ledger.sqlite'}"},
            "sources": [{"ae_title": SOURCE_AE, "host": "127.0.0.1", "port": free_port()}],
            "archive": {"ae_title": archive_ae, "host": "127.0.0.1", "port": archive_port},
            # Quick retries; and forwarding at receiving's priority (forward.nice = 0): the suite runs
            # more processes than the machine has cores, and its waits are for forwarding (ADR 0022
            # has its own test, tests/acceptance/test_forward_priority.py, with the default).
            "forward": {"lease_seconds": 3, "backoff_base": 0.2, "backoff_max": 1.0, "idle_poll": 0.1, "timeout": 10, "nice": 0},
            "confirm": {"poll_interval": 0.2, "commitment_timeout": 10, "retry_base": 0.5, "retry_max": 2, "report_retry_max": 2},
            "http": {"port": 0},
        }
        for section, values in overrides.items():
            if isinstance(values, dict):
                self.config.setdefault(section, {}).update(values)
            else:
                self.config[section] = values
        self.config_path = workdir / "guard.toml"
        self.log_path = workdir / "guard.log"
        self.proc: subprocess.Popen[bytes] | forked.ForkedProcess | None = None
        self.starts = 0

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Self:
        """Start the process and wait until it serves."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_toml(self.config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
        argv = ["serve", "--config", str(self.config_path)]
        if self.fresh:
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen([sys.executable, "-m", "guard", *argv], stdout=log, stderr=subprocess.STDOUT, env=env)
        else:
            self.proc = forked.start_guard(argv, env=env, stdout=self.log_path)
        self.starts += 1
        expected = self.starts

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                msg = f"guard exited with {self.proc.returncode}:\n{self.log_tail()}"
                raise RuntimeError(msg)
            started = sum(1 for r in self.log_records() if r.get("event") == "service.started")
            return started >= expected and port_is_open("127.0.0.1", self.port)

        wait_until(ready, timeout, message=f"guard did not start:\n{self.log_tail()}")
        return self

    def terminate(self, timeout: float = 40) -> int:
        """SIGTERM, wait for a clean exit, return the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc = None

    def kill(self) -> None:
        """SIGKILL of every process of the node (its listener first, then the guard): a crash, nothing drains or cleans up."""
        if self.proc is not None:
            for child in children_of(self.proc.pid):
                os.kill(child, signal.SIGKILL)
        self.kill_main()

    def kill_main(self) -> None:
        """SIGKILL of the guard's main process only; a listener process it started sees it gone and stops by itself."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def listener_pid(self, timeout: float = 60) -> int:
        """The pid of the current listener process (``node.listener_process``): a child of the guard that logged ``listener.started``."""
        main = self.proc.pid if self.proc is not None else -1

        def current() -> int | None:
            started = [r["pid"] for r in self.log_records() if r.get("event") == "listener.started"]
            if started and parent_of(started[-1]) == main:
                return int(started[-1])
            return None

        return wait_until(current, timeout, message=f"no listener process under {main}:\n{self.log_tail()}")

    def acceptor_pid(self) -> int:
        """The pid of the process that accepts DICOM associations: the listener process, or the guard itself when it has none."""
        if self.config["node"].get("listener_process", NodeSettings().listener_process):
            return self.listener_pid()
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """Stop however possible (fixture teardown), then note which audit events the run produced."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
        catalogue.collect_from_ledger(self.config["ledger"]["url"])

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON line the guard has logged."""
        if not self.log_path.exists():
            return []
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def log_tail(self, lines: int = 30) -> str:
        """The end of the log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @contextmanager
    def ledger_engine(self) -> Iterator[Engine]:
        """A read connection to the guard's ledger."""
        engine = create_engine(self.config["ledger"]["url"])
        try:
            yield engine
        finally:
            engine.dispose()

    def instance_states(self) -> dict[str, str]:
        """SOP Instance UID -> state of its newest version."""
        with self.ledger_engine() as engine, engine.connect() as conn:
            rows = conn.execute(
                select(instances.c.sop_instance_uid, instances.c.version, instances.c.state).order_by(instances.c.version)
            ).all()
        return {r.sop_instance_uid: r.state for r in rows}

    def audit_records(self, event: str | None = None) -> list[dict[str, Any]]:
        """Audit rows from the ledger, optionally of one event."""
        with self.ledger_engine() as engine, engine.connect() as conn:
            query = select(audit_log).order_by(audit_log.c.seq)
            if event is not None:
                query = query.where(audit_log.c.event == event)
            rows = conn.execute(query).mappings().all()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a ``guard`` command against this guard's configuration."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
        env["COLUMNS"] = "200"
        argv = [*args, "--config", str(self.config_path)]
        if not self.fresh:
            return forked.run_guard(argv, env=env, timeout=timeout)
        return subprocess.run([sys.executable, "-m", "guard", *argv], capture_output=True, text=True, timeout=timeout, env=env, check=False)
