"""A real TCP load balancer in front of several guard nodes: Debian's HAProxy, on loopback.

Each balancer has its own configuration in the test's temporary folder: a TCP frontend on a free
loopback port, one backend server per node, each checked by an HTTP ``GET /readyz`` on the node's
HTTP port at short intervals (so a draining or dead node leaves the rotation in well under a
second), and a statistics page on a second loopback port, which is how readiness is polled.
HAProxy runs in the foreground and is stopped by its own pid.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import httpx

from tests.support.ports import LOOPBACK, free_port
from tests.support.processes import ManagedProcess, PeerError, find_tool
from tests.support.waiting import STARTUP_TIMEOUT, wait_until

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

#: Health check interval in milliseconds; with fall 2 a node that stopped answering 200 is out after about 2 x this.
CHECK_INTERVAL_MS = 200


@dataclass(frozen=True)
class Backend:
    """One guard node behind the balancer: its name, DICOM port and HTTP port (for ``/readyz``)."""

    name: str
    dicom_port: int
    http_port: int
    host: str = LOOPBACK


def render_config(frontend: str, stats: str, backends: Sequence[Backend], *, inter_ms: int = CHECK_INTERVAL_MS) -> str:
    """HAProxy's configuration: TCP ``frontend`` (host:port), statistics at ``stats``, one checked server per backend."""
    lines = [
        "global",
        "    maxconn 512",
        "",
        "defaults",
        "    mode tcp",
        "    timeout connect 5s",
        "    timeout client  2m      # at least node.network_timeout",
        "    timeout server  2m",
        "",
        "frontend dicom",
        f"    bind {frontend}",
        "    default_backend guards",
        "",
        "backend guards",
        "    balance leastconn",
        "    option httpchk GET /readyz",
        "    http-check expect status 200",
        "    timeout check 5s        # a busy node answers slowly; only a failed or 503 answer takes it out",
        f"    default-server check inter {inter_ms}ms fall 2 rise 1",
        *(f"    server {b.name} {b.host}:{b.dicom_port} port {b.http_port}" for b in backends),
        "",
        "frontend stats",
        "    mode http",
        f"    bind {stats}",
        "    stats enable",
        "    stats uri /stats",
        "",
    ]
    return "\n".join(lines)


class HAProxy:
    """One haproxy process balancing DICOM associations over ``backends``."""

    def __init__(self, folder: Path, backends: Sequence[Backend], *, port: int | None = None) -> None:
        """Prepare (not start) a balancer in ``folder``."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.stats_port = free_port()
        self.backends = list(backends)
        self.config = folder / "haproxy.cfg"
        self.config.write_text(render_config(f"{LOOPBACK}:{self.port}", f"{LOOPBACK}:{self.stats_port}", self.backends), encoding="utf-8")
        self.process: ManagedProcess | None = None

    def start(self, timeout: float = STARTUP_TIMEOUT, *, ready: int | None = None) -> Self:
        """Start haproxy in the foreground; wait until ``ready`` servers (default: all) pass their check."""
        self.process = ManagedProcess([find_tool("haproxy"), "-db", "-f", str(self.config)], self.folder / "haproxy.log")
        wanted = len(self.backends) if ready is None else ready
        try:
            self.wait_up(wanted, timeout)
        except Exception as exc:
            description = self.process.describe()
            self.stop()
            msg = f"haproxy did not see {wanted} node(s) up: {description}"
            raise PeerError(msg) from exc
        return self

    def stop(self) -> None:
        """Stop haproxy (SIGTERM by pid)."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def server_states(self) -> dict[str, str]:
        """Backend server name -> its state as HAProxy sees it (``UP``, ``DOWN``...); empty while it cannot be asked."""
        if self.process is not None and not self.process.is_running():
            msg = f"haproxy exited: {self.process.describe()}"
            raise PeerError(msg)
        try:
            answer = httpx.get(f"http://{LOOPBACK}:{self.stats_port}/stats;csv", timeout=5)
        except httpx.HTTPError:
            return {}
        rows = csv.DictReader(io.StringIO(answer.text.lstrip("# ")))
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "guards" and r["svname"] not in {"FRONTEND", "BACKEND"}}

    def up(self) -> set[str]:
        """Names of the servers in rotation now."""
        return {name for name, state in self.server_states().items() if state.startswith("UP")}

    def wait_up(self, count: int, timeout: float = STARTUP_TIMEOUT) -> set[str]:
        """Wait until exactly ``count`` servers are in rotation; return their names."""
        seen: list[set[str]] = [set()]

        def settled() -> bool:
            seen[0] = self.up()
            return len(seen[0]) == count

        wait_until(settled, timeout, interval=0.1, message=f"haproxy: not {count} node(s) up within {timeout:.0f} s")
        return seen[0]

    def __enter__(self) -> Self:
        """Start on entering a ``with`` block."""
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        """Stop on leaving it."""
        self.stop()
