"""Several guard nodes behind HAProxy against the direct path: ``python -m bench.nodes`` (run from the repository root).

Four DCMTK ``storescu`` senders at once, one study of synthetic 512x512 16-bit CT instances each:

- directly: ``storescu`` -> Orthanc;
- through one, two and three guard nodes on one PostgreSQL ledger (a fresh database each),
  behind HAProxy (``docs/nodes.md``): ``storescu`` -> HAProxy -> node -> Orthanc.

Every path stores into an Orthanc of the same configuration (with the receive log of the cluster
tests), measured in the same run. The clock runs from starting the senders until the archive has
received every instance (for the guard also: until every instance is acknowledged, and until all
are confirmed). Figures: aggregate instances per second, and CPU per instance of all guard nodes
together (each node's process tree), of HAProxy and of Orthanc. Never asserted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procfs import cpu_seconds, tree_cpu_seconds
from tests.support.cluster import ARCHIVE_AE, GUARD_AE, SOURCE_AE, Cluster, start_cluster
from tests.support.datasets import Study, make_study
from tests.support.dcmtk import store_responses, storescu
from tests.support.postgres import scratch_database
from tests.support.waiting import wait_until

SENDERS = 4


class NodesBenchError(RuntimeError):
    """A sender was refused, or the archive or the ledger did not get every instance."""


@dataclass(frozen=True)
class NodesRun:
    """One timed run of the four senders."""

    path: str
    instances: int
    acknowledged_seconds: float
    archived_seconds: float
    confirmed_seconds: float | None
    guard_cpu: float | None
    haproxy_cpu: float | None
    archive_cpu: float | None

    def per_second(self, seconds: float | None) -> str:
        """Instances per second over ``seconds``, as printed."""
        return "-" if seconds is None else f"{self.instances / seconds:.1f}"

    def ms(self, cpu: float | None) -> str:
        """CPU milliseconds per instance, as printed."""
        return "-" if cpu is None else f"{1000 * cpu / self.instances:.2f}"


def _send_all(port: int, called_ae: str, studies: list[Study], timeout: float) -> None:
    """Run one storescu per study at once; raise unless every instance got Success."""
    failures: list[str] = []

    def send(study: Study) -> None:
        result = storescu("127.0.0.1", port, study.paths, calling_ae=SOURCE_AE, called_ae=called_ae, timeout=timeout)
        if store_responses(result) != ["Success"] * len(study.paths):
            failures.append((result.stdout + result.stderr)[-1500:])

    threads = [threading.Thread(target=send, args=(study,)) for study in studies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        msg = "a sender did not get Success for every instance:\n" + failures[0]
        raise NodesBenchError(msg)


def _cpu(pids: list[int | None], *, tree: bool) -> float | None:
    found = [(tree_cpu_seconds(p) if tree else cpu_seconds(p)) for p in pids if p is not None]
    return None if not found or None in found else sum(c for c in found if c is not None)


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _archived(cluster: Cluster, expected: set[str]) -> bool:
    return expected <= set(cluster.received())


def run(cluster: Cluster, studies: list[Study], nodes: int, timeout: float) -> NodesRun:
    """Send through the balancer of ``cluster`` (``nodes`` > 0), or straight to its archive (``nodes`` == 0)."""
    expected = {uid for study in studies for uid in study.sop_instance_uids}
    guard_pids = [n.proc.pid if n.proc is not None else None for n in cluster.nodes] if nodes else []
    haproxy_pid = [cluster.balancer.process.pid if cluster.balancer.process is not None else None] if nodes else []
    archive_pid = [cluster.archive.pid]
    before = (_cpu(guard_pids, tree=True), _cpu(haproxy_pid, tree=False), _cpu(archive_pid, tree=False))
    started = time.monotonic()
    if nodes:
        _send_all(cluster.port, GUARD_AE, studies, timeout)
    else:
        _send_all(cluster.archive.dicom_port, ARCHIVE_AE, studies, timeout)
    acknowledged = time.monotonic() - started
    wait_until(lambda: _archived(cluster, expected), timeout, interval=0.05, message="the archive did not receive every instance")
    archived = time.monotonic() - started
    confirmed = None
    if nodes:
        cluster.wait_confirmed(expected, timeout)
        confirmed = time.monotonic() - started
    after = (_cpu(guard_pids, tree=True), _cpu(haproxy_pid, tree=False), _cpu(archive_pid, tree=False))
    path = f"{SENDERS} x storescu -> HAProxy -> {nodes} node(s) -> Orthanc" if nodes else f"{SENDERS} x storescu -> Orthanc"
    return NodesRun(
        path,
        len(expected),
        acknowledged,
        archived,
        confirmed,
        *(_spent(b, a) for b, a in zip(before, after, strict=True)),
    )


def render(runs: list[NodesRun], per_sender: int) -> str:
    """The table."""
    header = (
        f"{'path':48}  {'acked/s':>7}  {'archived/s':>10}  {'confirmed/s':>11}  {'guard CPU ms/inst':>17}"
        f"  {'HAProxy ms/inst':>15}  {'Orthanc ms/inst':>15}"
    )
    lines = [f"{SENDERS} senders at once, {per_sender} instances each (512x512 16-bit CT); inst/s = aggregate instances per second", header]
    direct = runs[0]
    lines.extend(
        f"{item.path:48}  {item.per_second(item.acknowledged_seconds):>7}  {item.per_second(item.archived_seconds):>10}"
        f"  {item.per_second(item.confirmed_seconds):>11}  {item.ms(item.guard_cpu):>17}  {item.ms(item.haproxy_cpu):>15}"
        f"  {item.ms(item.archive_cpu):>15}"
        for item in runs
    )
    lines.extend(f"{item.path}: archived/s against direct {direct.archived_seconds / item.archived_seconds:.2f}" for item in runs[1:])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Generate the studies, time the direct path and one, two and three nodes, print the figures."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.nodes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=50, help="instances per sender (default 50)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3], help="cluster sizes (default 1 2 3)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one run may take (default 600)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="guard-bench-nodes-"))
    runs: list[NodesRun] = []
    try:
        for index, nodes in enumerate(args.nodes):
            studies = [
                make_study(root / f"studies-{nodes}" / f"sender-{i}", args.instances, rows=512, columns=512, patient_id=f"BENCH{nodes}{i}")
                for i in range(SENDERS)
            ]
            with scratch_database("guard_bench_nodes") as (url, _admin):
                cluster = start_cluster(root / f"cluster-{nodes}", url, nodes)
                try:
                    if index == 0:
                        direct = [
                            make_study(root / "direct" / f"sender-{i}", args.instances, rows=512, columns=512) for i in range(SENDERS)
                        ]
                        runs.append(run(cluster, direct, 0, args.timeout))
                    runs.append(run(cluster, studies, nodes, args.timeout))
                finally:
                    cluster.stop()
        print(render(runs, args.instances))
    except (NodesBenchError, TimeoutError, OSError, RuntimeError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
