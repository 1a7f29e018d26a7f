"""Several guard nodes on one PostgreSQL ledger behind HAProxy, with a real Orthanc archive.

Each test starts as few nodes as prove its point and folds the scenarios one cluster start can
prove together; every wait is a bounded poll.
"""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import func, or_, select

from guard.ledger.schema import instances
from tests.support.cluster import GUARD_AE, SOURCE_AE, TOKEN
from tests.support.datasets import make_study
from tests.support.dcmtk import move_responses, movescu, store_responses, storescu
from tests.support.fixtures import STORESCP_AET
from tests.support.pacs import PacsListener, ReceivedReport, request_commitment
from tests.support.storescp import Storescp
from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.cluster import Cluster, ClusterFactory

pytestmark = [pytest.mark.interop, pytest.mark.postgres, pytest.mark.slow]

SENDERS = 4
PER_STUDY = 6
CONFIRM_TIMEOUT = 120
CT = "1.2.840.10008.5.1.4.1.1.2"
NEVER_SENT = "1.2.3.999999.1"


def _send_at_once(cluster: Cluster, folder: Path, senders: int, count: int) -> list[tuple[str, list[str]]]:
    """``senders`` storescu processes at once through the balancer, one study each; (study UID, store responses) per sender."""
    studies = [make_study(folder / f"study-{i}", count, rows=16, columns=16, patient_id=f"PAT{i}") for i in range(senders)]
    with ThreadPoolExecutor(senders) as pool:
        results = list(pool.map(lambda s: storescu("127.0.0.1", cluster.port, s.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE), studies))
    return [(s.study_uid, store_responses(r)) for s, r in zip(studies, results, strict=True)]


def _delete(cluster: Cluster, study_uid: str) -> list[httpx.Response]:
    """DELETE the study through every node at once."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with ThreadPoolExecutor(len(cluster.nodes)) as pool:
        return list(pool.map(lambda n: httpx.delete(f"{cluster.http(n)}/studies/{study_uid}", headers=headers, timeout=60), cluster.nodes))


def test_four_senders_through_haproxy_each_instance_forwarded_and_confirmed_once_deletes_decided_once_audit_verifies(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """Three nodes, four senders at once through HAProxy.

    Every instance is acknowledged, received by the nodes between them (at least two of them), stored in the archive
    exactly once (the archive's receive log), forwarded and confirmed exactly once (one
    ``instance.forwarded`` and one ``instance.confirmed`` per SOP Instance UID) though several nodes
    forward; the archive's Storage Commitment reports reach the nodes through the balancer. A
    delete for one study through every node at once: one permitted decision carried out, the other
    nodes answer that it already was; an unknown study is refused by each node with the reason a
    single node gives. ``guard audit verify`` on each node passes over every node's records.
    """
    cluster = cluster_factory(3)
    sent = _send_at_once(cluster, tmp_path, SENDERS, PER_STUDY)
    assert [responses for _, responses in sent] == [["Success"] * PER_STUDY] * SENDERS
    received = {r["sop_instance_uid"]: r["node"] for r in cluster.audit("instance.received")}
    uids = set(received)
    assert len(uids) == SENDERS * PER_STUDY
    cluster.wait_confirmed(uids, CONFIRM_TIMEOUT)

    assert len(set(received.values())) >= 2, received
    assert Counter(cluster.received()) == dict.fromkeys(uids, 1)
    forwarded = Counter(r["sop_instance_uid"] for r in cluster.audit("instance.forwarded"))
    confirmed = Counter(r["sop_instance_uid"] for r in cluster.audit("instance.confirmed"))
    assert (forwarded, confirmed) == (dict.fromkeys(uids, 1), dict.fromkeys(uids, 1))
    assert len({r["node"] for r in cluster.audit("instance.forwarded")}) >= 2

    study_uid = sent[0][0]
    answers = _delete(cluster, study_uid)
    assert [(a.status_code, a.json()["decision"]) for a in answers] == [(200, "permitted")] * 3, [a.text for a in answers]
    permitted = cluster.audit("delete.permitted")
    assert sorted(("already_deleted" in p["detail"], p["study_uid"]) for p in permitted) == [(False, study_uid)] + [(True, study_uid)] * 2
    assert {p["node"] for p in permitted} == {"node-a", "node-b", "node-c"}

    unknown = _delete(cluster, "1.2.3.4.5.6.7")
    assert [a.status_code for a in unknown] == [409] * 3, [a.text for a in unknown]
    assert [a.json()["reasons"] for a in unknown] == [["unknown-study"]] * 3

    for node in cluster.nodes:
        verify = node.cli("audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr


def _acknowledged_then_killed(cluster: Cluster, node_id: str, folder: Path, count: int, kill_after: int) -> list[str]:
    """Send a study straight to ``node_id``; SIGKILL the node once it received ``kill_after``; return the acknowledged UIDs."""
    node = cluster.node(node_id)
    study = make_study(folder / "killed-study", count, rows=16, columns=16, patient_id="PATKILL")

    def received_by_node() -> bool:
        return (
            sum(1 for r in cluster.audit("instance.received") if r["node"] == node_id and r["study_uid"] == study.study_uid) >= kill_after
        )

    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(storescu, "127.0.0.1", node.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
        wait_until(received_by_node, CONFIRM_TIMEOUT, interval=0.1, message=f"{node_id} did not receive {kill_after} instances")
        node.kill()
        responses = store_responses(sending.result())
    # One instance may be durable but unanswered: committed, then the node killed before its response.
    assert kill_after - 1 <= len(responses) < count, "the node was killed mid-study"
    assert set(responses) == {"Success"}
    return study.sop_instance_uids[: len(responses)]


def _claimable(cluster: Cluster, uids: list[str]) -> bool:
    """Whether no instance of ``uids`` is under a forwarding lease or waiting for a retry time now."""
    with cluster.nodes[0].ledger_engine() as engine, engine.connect() as conn:
        busy = conn.execute(
            select(func.count())
            .select_from(instances)
            .where(instances.c.sop_instance_uid.in_(uids))
            .where(or_(instances.c.lease_expires_at > func.now(), instances.c.next_attempt_at > func.now()))
        ).scalar_one()
    return busy == 0


def _states_and_holders(cluster: Cluster, uids: list[str]) -> tuple[set[str], set[str | None]]:
    """The states of ``uids`` and the nodes recorded as holding their spool copies."""
    with cluster.nodes[0].ledger_engine() as engine, engine.connect() as conn:
        rows = conn.execute(select(instances.c.state, instances.c.node).where(instances.c.sop_instance_uid.in_(uids))).all()
    return {r.state for r in rows}, {r.node for r in rows}


@pytest.mark.parametrize("shared", [True, False], ids=["shared-spool", "node-local-spool"])
def test_a_node_killed_mid_study_loses_no_acknowledged_instance(cluster_factory: ClusterFactory, tmp_path: Path, *, shared: bool) -> None:
    """SIGKILL node A mid-study while the archive is down, so its acknowledged instances are all backlog.

    Shared spool (three nodes): B and C forward and confirm A's backlog while A stays dead (A's
    forwarding leases expire after ``forward.lease_seconds``). Node-local spool (two nodes): B forwards its own instances
    but A's backlog waits, unforwarded, until A is started again, then A finishes it. Either way
    every acknowledged instance is confirmed and stored in the archive exactly once.
    """
    cluster = cluster_factory(3 if shared else 2, shared_spool=shared)
    cluster.archive.stop()
    acknowledged = _acknowledged_then_killed(cluster, "node-a", tmp_path, count=30, kill_after=8)
    cluster.archive.start()
    node_b = cluster.node("node-b")
    own = make_study(tmp_path / "node-b-study", 1, rows=16, columns=16, patient_id="PATB")
    assert store_responses(storescu("127.0.0.1", node_b.port, own.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)) == ["Success"]
    if shared:
        cluster.wait_confirmed({*acknowledged, *own.sop_instance_uids}, CONFIRM_TIMEOUT)
        takers = {r["node"] for r in cluster.audit("instance.forwarded") if r["sop_instance_uid"] in acknowledged}
        assert (bool(takers), takers <= {"node-b", "node-c"}) == (True, True), takers
    else:
        cluster.wait_confirmed(set(own.sop_instance_uids), CONFIRM_TIMEOUT)
        wait_until(lambda: _claimable(cluster, acknowledged), CONFIRM_TIMEOUT, interval=0.2, message="node A's leases did not expire")
        later = make_study(tmp_path / "node-b-later", 1, rows=16, columns=16, patient_id="PATB")
        assert store_responses(storescu("127.0.0.1", node_b.port, later.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)) == ["Success"]
        cluster.wait_confirmed(set(later.sop_instance_uids), CONFIRM_TIMEOUT)
        # B forwarded an instance after A's backlog became due, and left the backlog alone.
        states, holders = _states_and_holders(cluster, acknowledged)
        assert (states <= {"received", "failed"}, holders) == (True, {"node-a"})
        assert not set(acknowledged) & set(cluster.received())
        cluster.node("node-a").start()
        cluster.wait_confirmed(set(acknowledged), CONFIRM_TIMEOUT)
        assert {r["node"] for r in cluster.audit("instance.forwarded") if r["sop_instance_uid"] in acknowledged} == {"node-a"}
    stored = Counter(cluster.received())
    twice = {uid for uid in acknowledged if stored[uid] != 1}
    history = [(r["event"], r["node"], r["sop_instance_uid"], r["detail"]) for r in cluster.audit() if r.get("sop_instance_uid") in twice]
    assert {uid: stored[uid] for uid in acknowledged} == dict.fromkeys(acknowledged, 1), history


def test_rolling_restart_under_load_refuses_no_association(cluster_factory: ClusterFactory, tmp_path: Path) -> None:
    """Two nodes behind HAProxy; each node in turn gets SIGTERM, drains, exits 0 and is started again, under load.

    Two senders store study after study through the balancer the whole time: every association
    is accepted, every instance acknowledged and then confirmed.
    """
    cluster = cluster_factory(2, extra={"node": {"drain_seconds": 4}})
    stop = threading.Event()
    outcomes: list[tuple[str, list[str], int]] = []

    def sender(index: int) -> None:
        round_ = 0
        while not stop.is_set():
            study = make_study(tmp_path / f"load-{index}-{round_}", 3, rows=16, columns=16, patient_id=f"PATL{index}")
            result = storescu("127.0.0.1", cluster.port, study.paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
            outcomes.append((study.study_uid, store_responses(result), result.returncode))
            round_ += 1

    with ThreadPoolExecutor(2) as pool:
        senders = [pool.submit(sender, i) for i in range(2)]
        try:
            for node in cluster.nodes:
                wait_until(lambda: len(outcomes) >= 2, CONFIRM_TIMEOUT, interval=0.1, message="no load before the restart")
                assert node.terminate(timeout=60) == 0
                node.start()
                cluster.balancer.wait_up(len(cluster.nodes))
            before = len(outcomes)
            wait_until(lambda: len(outcomes) >= before + 2, CONFIRM_TIMEOUT, interval=0.1, message="no load after the restarts")
        finally:
            stop.set()
        for future in senders:
            future.result()

    assert [(responses, code) for _, responses, code in outcomes] == [(["Success"] * 3, 0)] * len(outcomes)
    stopped = [(r["node"], r["outcome"]) for r in cluster.audit("service.stopped")]
    assert stopped == [("node-a", "success"), ("node-b", "success")]
    uids = {r["sop_instance_uid"] for r in cluster.audit("instance.received")}
    assert len(uids) == 3 * len(outcomes)
    cluster.wait_confirmed(uids, CONFIRM_TIMEOUT)


def test_storage_commitment_from_the_pacs_and_c_move_relay_through_the_balancer(cluster_factory: ClusterFactory, tmp_path: Path) -> None:
    """Two nodes; the PACS stores two studies at once through HAProxy, then asks each node directly for Storage Commitment.

    Each node is asked for every instance, including those the other node received, plus one
    never sent: whichever node sends it, each report reaches the PACS once, names the guard's AE
    title, lists every stored instance as committed and the unknown one as failed (0x0112).
    Then two C-MOVEs at once through the balancer to a storescp: each relaying node names its own
    relay AE title, the archive connects back to that node, and every instance arrives once.
    """
    pacs = PacsListener(ae_title=SOURCE_AE).start()
    try:
        with Storescp(tmp_path / "destination", aet=STORESCP_AET, fork=True) as destination:
            cluster = cluster_factory(
                2,
                lists={
                    "sources": [{"ae_title": SOURCE_AE, "host": "127.0.0.1", "port": pacs.port}],
                    "destinations": [{"ae_title": STORESCP_AET, "host": "127.0.0.1", "port": destination.port}],
                },
                # The never-sent instance is reported failed at this deadline; the others are confirmed before the request.
                extra={"confirm": {"source_report_deadline": 3}},
            )
            sent = _send_at_once(cluster, tmp_path, 2, 3)
            assert [responses for _, responses in sent] == [["Success"] * 3] * 2
            received = {r["sop_instance_uid"]: r["study_uid"] for r in cluster.audit("instance.received")}
            cluster.wait_confirmed(set(received), CONFIRM_TIMEOUT)
            references = [(CT, uid) for uid in sorted(received)]
            transactions = {}
            for node in cluster.nodes:
                uid, status = request_commitment(node.port, [*references, (CT, NEVER_SENT)])
                assert status == 0
                transactions[uid] = node.config["node"]["id"]
            reports = {uid: _report(pacs, uid) for uid in transactions}
            expected = (GUARD_AE, sorted(received), {NEVER_SENT: 0x0112})
            assert [(r.calling_ae, sorted(r.successes), r.failures) for r in reports.values()] == [expected] * 2
            wait_until(lambda: len(_inbound_reported(cluster)) == len(transactions), 30, message="inbound reports not audited")
            assert sorted(_inbound_reported(cluster)) == sorted(transactions)
            with pacs.lock:
                assert sorted(r.transaction_uid for r in pacs.reports) == sorted(transactions)

            studies = sorted(set(received.values()))
            with ThreadPoolExecutor(len(studies)) as pool:
                moves = list(pool.map(lambda study: _move(cluster, study), studies))
            assert [_final(move_responses(m)) for m in moves] == [{"status": 0, "completed": 3, "failed": 0, "warning": 0}] * 2
            assert destination.wait_for(set(received)) == set(received)
            assert len(destination.received_files()) == len(received)
            relayed = cluster.audit("move.relayed")
            assert sorted(r["study_uid"] for r in relayed) == studies
    finally:
        pacs.stop()


def _report(pacs: PacsListener, transaction_uid: str) -> ReceivedReport:
    """Wait for the report of ``transaction_uid`` at the PACS."""
    report = wait_until(lambda: pacs.report_for(transaction_uid), CONFIRM_TIMEOUT, message=f"no report of {transaction_uid}")
    assert report is not None
    return report


def _inbound_reported(cluster: Cluster) -> list[str]:
    """Transaction UIDs of the reports the guard delivered to a source, as audited."""
    return [r["detail"]["transaction_uid"] for r in cluster.audit("commitment.reported") if r["detail"]["direction"] == "inbound"]


def _move(cluster: Cluster, study_uid: str) -> subprocess.CompletedProcess[str]:
    """C-MOVE one study through the balancer to the storescp."""
    return movescu(
        "127.0.0.1",
        cluster.port,
        calling_ae=SOURCE_AE,
        called_ae=GUARD_AE,
        move_destination=STORESCP_AET,
        level="STUDY",
        keys={"StudyInstanceUID": study_uid},
        debug=True,
    )


def _final(responses: list[dict[str, int]]) -> dict[str, int]:
    """The final C-MOVE response without Number of Remaining."""
    return {k: v for k, v in responses[-1].items() if k != "remaining"}
