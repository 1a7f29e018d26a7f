"""The cost of byte verification per instance, by policy: ``python -m bench.verify``.

A real Orthanc archive holds a synthetic study (512x512 16-bit CT, about 512 KiB an instance);
the guard's C-GET retriever fetches and hashes instances from it as each policy would: the
delete-time sample (one per series), a sample at confirmation, and every instance (``all``, and
what the rolling re-verification spends per instance over its window). Wall time and the guard's
CPU time (``time.process_time``) are reported per retrieved instance and per study. Figures are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from pydicom import dcmread

from guard.config.verify import CompareMode
from guard.dicom.net import Peer
from guard.dicom.retrieve import CGetRetriever
from tests.support.datasets import make_study
from tests.support.orthanc import Orthanc


def _measure(retriever: CGetRetriever, study_uid: str, series: dict[str, list[str]], per_series: int, rounds: int) -> dict[str, float]:
    """Median wall and CPU seconds of one check of ``per_series`` instances in every series (-1: all)."""
    walls, cpus, counts = [], [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        retrieved = 0
        for series_uid, uids in series.items():
            chosen = uids if per_series < 0 else uids[:per_series]
            retrieved += len(retriever.digests(study_uid, series_uid, chosen))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        counts.append(retrieved)
    n = max(1, counts[0])
    wall_s, cpu_s = statistics.median(walls), statistics.median(cpus)
    return {"instances": counts[0], "study_ms": wall_s * 1000, "study_cpu_ms": cpu_s * 1000, "per_instance_ms": wall_s * 1000 / n,
            "per_instance_cpu_ms": cpu_s * 1000 / n}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print a table (``--json`` for the raw figures)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=40, help="instances in the study (default 40)")
    parser.add_argument("--series", type=int, default=4, help="series in the study (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="checks per policy; the median is reported (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        study = make_study(root / "study", args.instances, rows=512, columns=512, series_per_study=args.series)
        headers = [dcmread(p, stop_before_pixels=True) for p in study.paths]
        series: dict[str, list[str]] = {}
        for ds in headers:
            series.setdefault(str(ds.SeriesInstanceUID), []).append(str(ds.SOPInstanceUID))
        kinds = {str(ds.SOPInstanceUID): (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in headers}
        with Orthanc(root / "orthanc", aet="ARCHIVE", modalities={"guard": ("GUARD", "127.0.0.1", 1)}) as orthanc:
            orthanc.upload(study.paths)
            retriever = CGetRetriever(
                "GUARD", Peer("ARCHIVE", orthanc.host, orthanc.dicom_port), timeout=60, compare=CompareMode.EXACT,
                kinds_of=lambda uids: {u: kinds[u] for u in uids},
            )  # fmt: skip
            figures = {
                "delete_sample (1 per series)": _measure(retriever, study.study_uid, series, 1, args.rounds),
                "at_confirmation = sample (1 per series)": _measure(retriever, study.study_uid, series, 1, args.rounds),
                "at_confirmation = all / rolling, per instance": _measure(retriever, study.study_uid, series, -1, args.rounds),
            }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{'policy':48} {'instances':>9} {'study ms':>9} {'CPU ms':>8} {'ms/inst':>8} {'CPU ms/inst':>11}")
    for name, f in figures.items():
        row = f"{name:48} {f['instances']:>9.0f} {f['study_ms']:>9.1f} {f['study_cpu_ms']:>8.1f} {f['per_instance_ms']:>8.2f}"
        print(f"{row} {f['per_instance_cpu_ms']:>11.2f}")
    print(f"none: 0 instances retrieved. Study: {args.instances} instances in {args.series} series, 512x512 16-bit.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
