"""``bench.syncs`` measures real syncs in a real folder, and the benchmark's header reports them."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from bench.report import header
from bench.syncs import SyncCosts, measure, render


def test_measure_times_real_syncs_and_leaves_nothing(tmp_path: Path) -> None:
    """Twenty rounds of 64 KiB: every figure measured, the receipt the sum of the three syncs, the scratch folder gone."""
    costs = measure(tmp_path, count=20, size=65536)
    assert costs.size == 65536
    assert costs.write_ms > 0
    assert costs.commit_ms > 0
    assert costs.receipt_ms == costs.file_sync_ms + costs.folder_sync_ms + costs.commit_ms
    assert list(tmp_path.iterdir()) == []


def test_header_reports_the_storage() -> None:
    """The benchmark's header carries the storage line when the run measured it."""
    costs = SyncCosts(size=530_000, write_ms=0.4, file_sync_ms=0.6, folder_sync_ms=0.2, commit_ms=0.3)
    meta = {
        "storescu_pdu": 131072, "repeat": 1, "revision": "r", "cpus": 2, "platform": "p", "dcmtk": "d", "orthanc": "o",
        "python": "3", "pydicom": "3", "pynetdicom": "3", "instance_bytes": 530_000, "archive_pdu": None, "guard_pdu": 262144,
        "workers": 1, "forward_nice": 10, "ledgers": ["sqlite"], "poll_interval": 0.05, "syncs": asdict(costs),
    }  # fmt: skip
    text = header(meta)
    assert render(costs) in text
    assert "three syncs, 1.10 ms an instance" in text
