"""Several ``guard serve`` nodes on one PostgreSQL ledger behind HAProxy, with a real Orthanc archive.

Each node has its own ports, data folder, ``node.id`` (``node-a``, ``node-b``...) and relay AE title
(``GUARD-A``...). The archive knows ``GUARD`` at the balancer (Storage Commitment reports reach any
node) and each relay AE title at its node's own port (C-MOVE sub-operations go back to the relaying
node). The archive writes every C-STORE it receives, in order, to a receive log (a Lua filter), so
a test can count how often each SOP Instance UID arrived, not only whether it is held.
"""

from __future__ import annotations

import json
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import httpx

from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.haproxy import Backend, HAProxy
from tests.support.orthanc import Orthanc
from tests.support.ports import LOOPBACK, free_port
from tests.support.waiting import STARTUP_TIMEOUT, wait_until

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

ARCHIVE_AE = "ARCHIVE"
#: Bearer token of every node's admin API in the cluster tests.
TOKEN = "cluster-token"

_RECEIVE_FILTER = """
function ReceivedInstanceFilter(dicom, origin, info)
  local log = io.open({path}, "a")
  log:write(dicom.SOPInstanceUID .. " " .. (origin["RemoteAet"] or "") .. " " .. (origin["CalledAet"] or "") .. "\\n")
  log:close()
  return true
end
"""


@dataclass
class Cluster:
    """The nodes, the balancer in front of them and the archive behind them."""

    nodes: list[GuardProcess]
    balancer: HAProxy
    archive: Orthanc
    receive_log: Path
    http_ports: dict[str, int] = field(default_factory=dict)

    @property
    def port(self) -> int:
        """The DICOM port sources call: HAProxy's frontend."""
        return self.balancer.port

    def node(self, node_id: str) -> GuardProcess:
        """The node named ``node_id``."""
        return next(n for n in self.nodes if n.config["node"]["id"] == node_id)

    def http(self, node: GuardProcess) -> str:
        """Base URL of ``node``'s HTTP API."""
        return f"http://{LOOPBACK}:{node.config['http']['port']}"

    def received(self) -> list[str]:
        """SOP Instance UIDs the archive received by C-STORE, one per store, in order."""
        if not self.receive_log.exists():
            return []
        return [line.split()[0] for line in self.receive_log.read_text(encoding="utf-8").splitlines() if line.strip()]

    def states(self) -> dict[str, str]:
        """SOP Instance UID -> state, read from the shared ledger (any node's view is the same)."""
        return self.nodes[0].instance_states()

    def audit(self, event: str | None = None) -> list[dict[str, Any]]:
        """Audit records of every node, in chain order."""
        return self.nodes[0].audit_records(event)

    def wait_confirmed(self, uids: set[str], timeout: float) -> None:
        """Wait until every instance of ``uids`` is confirmed."""

        def done() -> bool:
            states = self.states()
            return all(states.get(uid) == "confirmed" for uid in uids)

        wait_until(
            done, timeout, interval=0.2, message=f"not all of {len(uids)} instances confirmed: {sorted(set(self.states().values()))}"
        )

    def readyz(self, node: GuardProcess) -> int:
        """``node``'s /readyz status code, 0 while it does not answer."""
        try:
            return httpx.get(f"{self.http(node)}/readyz", timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def stop(self) -> None:
        """Stop the balancer, every node and the archive, each by its own pid."""
        self.balancer.stop()
        # At once: each node drains and stops its workers, which takes seconds.
        with ThreadPoolExecutor(len(self.nodes) or 1) as pool:
            list(pool.map(GuardProcess.stop, self.nodes))
        self.archive.stop()


def node_config(letter: str, *, shared_spool: Path | None, extra: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One node's configuration sections: identity, quick leases and heartbeat, admin API, spool mode."""
    config: dict[str, dict[str, Any]] = {
        "node": {"id": f"node-{letter}", "relay_ae_title": f"GUARD-{letter.upper()}", "heartbeat_seconds": 0.5, "lease_seconds": 3},
        "http": {"bind": LOOPBACK, "port": free_port(), "token": TOKEN},
        "delete": {"source_check": False},
        "confirm": {"batch_wait": 0.3},
    }
    if shared_spool is not None:
        config["spool"] = {"shared": True, "dir": str(shared_spool)}
    for section, values in extra.items():
        config.setdefault(section, {}).update(values)
    return config


def start_cluster(
    folder: Path,
    ledger_url: str,
    count: int,
    *,
    shared_spool: bool = False,
    lists: Mapping[str, list[dict[str, Any]]] | None = None,
    extra: Mapping[str, dict[str, Any]] | None = None,
) -> Cluster:
    """Start an archive, ``count`` nodes (one after the other: the first migrates the ledger) and HAProxy.

    ``extra`` is merged into each node's configuration sections; ``lists`` replaces list sections
    (``sources``, ``destinations``).
    """
    letters = string.ascii_lowercase[:count]
    spool = folder / "shared-spool" if shared_spool else None
    receive_log = folder / "archive-received.log"
    lua = folder / "receive-log.lua"
    folder.mkdir(parents=True, exist_ok=True)
    lua.write_text(_RECEIVE_FILTER.replace("{path}", json.dumps(str(receive_log))), encoding="utf-8")
    archive = Orthanc(folder / "archive", aet=ARCHIVE_AE, extra_config={"LuaScripts": [str(lua)]})
    nodes = []
    for letter in letters:
        overrides: dict[str, Any] = node_config(letter, shared_spool=spool, extra=extra or {})
        overrides.update(lists or {})
        nodes.append(GuardProcess(folder / f"node-{letter}", archive_port=archive.dicom_port, ledger_url=ledger_url, **overrides))
    balancer = HAProxy(folder / "haproxy", [Backend(n.config["node"]["id"], n.port, n.config["http"]["port"]) for n in nodes])
    archive.modalities["guard"] = (GUARD_AE, LOOPBACK, balancer.port)
    for node in nodes:
        archive.modalities[node.config["node"]["id"]] = (node.config["node"]["relay_ae_title"], LOOPBACK, node.port)
    cluster = Cluster(nodes, balancer, archive, receive_log)
    try:
        archive.start()
        for node in nodes:
            node.start()
        balancer.start(STARTUP_TIMEOUT)
    except BaseException:
        cluster.stop()
        raise
    return cluster


class ClusterFactory:
    """Start clusters for one test; every process is stopped at teardown."""

    def __init__(self, folder: Path, ledger_url: str) -> None:
        """Clusters go under ``folder``, all on the ledger ``ledger_url``."""
        self.folder = folder
        self.ledger_url = ledger_url
        self.made: list[Cluster] = []

    def __call__(self, count: int, **kwargs: Any) -> Cluster:
        """Start a cluster of ``count`` nodes (see ``start_cluster``)."""
        cluster = start_cluster(self.folder / f"cluster-{len(self.made)}", self.ledger_url, count, **kwargs)
        self.made.append(cluster)
        return cluster

    def __enter__(self) -> Self:
        """Nothing to start."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Stop every cluster made."""
        for cluster in self.made:
            cluster.stop()


__all__ = ["ARCHIVE_AE", "GUARD_AE", "SOURCE_AE", "TOKEN", "Cluster", "ClusterFactory", "start_cluster"]
