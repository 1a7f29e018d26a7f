"""Several guard nodes on one PostgreSQL ledger behind HAProxy, with a real Orthanc archive.

Each test starts as few nodes as prove its point and folds the scenarios one cluster start can
prove together; every wait is a bounded poll.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.cluster import GUARD_AE, SOURCE_AE, TOKEN
from tests.support.datasets import make_study
from tests.support.dcmtk import store_responses, storescu

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.cluster import Cluster, ClusterFactory

pytestmark = [pytest.mark.interop, pytest.mark.postgres, pytest.mark.slow]

SENDERS = 4
PER_STUDY = 6
CONFIRM_TIMEOUT = 120


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
    """Two nodes, four senders at once through HAProxy.

    Every instance is acknowledged, received by both nodes between them, stored in the archive
    exactly once (the archive's receive log), forwarded and confirmed exactly once (one
    ``instance.forwarded`` and one ``instance.confirmed`` per SOP Instance UID) though both nodes
    forward; the archive's Storage Commitment reports reach the nodes through the balancer. A
    delete for one study through both nodes at once: one permitted decision carried out, the other
    node answers that it already was; an unknown study is refused by each node with the reason a
    single node gives. ``guard audit verify`` on each node passes over every node's records.
    """
    cluster = cluster_factory(2)
    sent = _send_at_once(cluster, tmp_path, SENDERS, PER_STUDY)
    assert [responses for _, responses in sent] == [["Success"] * PER_STUDY] * SENDERS
    received = {r["sop_instance_uid"]: r["node"] for r in cluster.audit("instance.received")}
    uids = set(received)
    assert len(uids) == SENDERS * PER_STUDY
    cluster.wait_confirmed(uids, CONFIRM_TIMEOUT)

    assert set(received.values()) == {"node-a", "node-b"}
    assert Counter(cluster.received()) == dict.fromkeys(uids, 1)
    forwarded = Counter(r["sop_instance_uid"] for r in cluster.audit("instance.forwarded"))
    confirmed = Counter(r["sop_instance_uid"] for r in cluster.audit("instance.confirmed"))
    assert (forwarded, confirmed) == (dict.fromkeys(uids, 1), dict.fromkeys(uids, 1))
    assert {r["node"] for r in cluster.audit("instance.forwarded")} == {"node-a", "node-b"}

    study_uid = sent[0][0]
    answers = _delete(cluster, study_uid)
    assert [(a.status_code, a.json()["decision"]) for a in answers] == [(200, "permitted")] * 2, [a.text for a in answers]
    permitted = cluster.audit("delete.permitted")
    assert sorted(("already_deleted" in p["detail"], p["study_uid"]) for p in permitted) == [(False, study_uid), (True, study_uid)]
    assert {p["node"] for p in permitted} == {"node-a", "node-b"}

    unknown = _delete(cluster, "1.2.3.4.5.6.7")
    assert [a.status_code for a in unknown] == [409, 409], [a.text for a in unknown]
    assert unknown[0].json()["reasons"] == unknown[1].json()["reasons"]
    assert unknown[0].json()["reasons"]

    for node in cluster.nodes:
        verify = node.cli("audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
