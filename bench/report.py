"""The printed report and the JSON results: figures and targets, never assertions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.procfs import KIB
from bench.runs import DIRECT, THROUGH_GUARD, RunResult

#: The guard's pass-through must reach at least this share of the direct throughput.
TARGET_RATIO = 0.8
#: The guard's peak resident set must stay under this many megabytes (10^6 bytes), whatever the study size.
TARGET_RSS_MB = 200.0


def rss_mb(kib: int | None) -> float | None:
    """KiB (as ``/proc`` reports) to megabytes of 10^6 bytes."""
    return None if kib is None else kib * KIB / 1e6


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def median_run(runs: Sequence[RunResult]) -> RunResult:
    """The run with the median time to archive (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.archive_seconds)
    return ordered[(len(ordered) - 1) // 2]


@dataclass(frozen=True)
class SizeSummary:
    """Guard against direct for one study size."""

    size: int
    direct: RunResult
    guard: RunResult

    @property
    def ratio(self) -> float:
        """Guard throughput over direct throughput (time to archive)."""
        return self.guard.instances_per_second / self.direct.instances_per_second

    @property
    def peak_rss_mb(self) -> float | None:
        """The guard's peak RSS in MB."""
        return rss_mb(self.guard.guard_peak_rss_kib)

    @property
    def throughput_met(self) -> bool:
        """Whether the pass-through reaches the target share of direct throughput."""
        return self.ratio >= TARGET_RATIO

    @property
    def rss_met(self) -> bool:
        """Whether the guard's peak RSS stays under the target."""
        return self.peak_rss_mb is not None and self.peak_rss_mb < TARGET_RSS_MB


def summarise(runs: Sequence[RunResult]) -> list[SizeSummary]:
    """Pair the median direct and guard runs of every size that has both."""
    summaries = []
    for size in sorted({r.size for r in runs}):
        direct = [r for r in runs if r.size == size and r.path == DIRECT]
        guard = [r for r in runs if r.size == size and r.path == THROUGH_GUARD]
        if direct and guard:
            summaries.append(SizeSummary(size=size, direct=median_run(direct), guard=median_run(guard)))
    return summaries


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, numbers right-aligned."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))) for row in rows]
    return "\n".join([line, rule, *body])


def header(meta: dict[str, Any]) -> str:
    """What was measured, how, and on what."""
    pdu = meta["storescu_pdu"]
    storescu_pdu = "DCMTK default (16 KiB)" if pdu is None else f"{pdu} bytes (-pdu {pdu})"
    repeat = f"{meta['repeat']} run(s) per path and size" + (", median by time to archive." if meta["repeat"] > 1 else ".")
    lines = [
        f"guard benchmark (source {meta['revision']}): storescu -> Orthanc directly, and storescu -> guard -> Orthanc",
        "Every DCMTK and Orthanc process runs with TCP_NODELAY=1; the guard sets TCP_NODELAY on its own sockets.",
        " ".join(
            [
                f"Machine: {meta['cpus']} CPUs, {meta['platform']}; {meta['dcmtk']}; {meta['orthanc']};",
                f"Python {meta['python']}, pydicom {meta['pydicom']}, pynetdicom {meta['pynetdicom']}.",
            ],
        ),
        f"Studies: synthetic CT, 512x512 16-bit, about {meta['instance_bytes'] / 1e6:.2f} MB a file; one storescu association.",
        " ".join(
            [
                f"storescu max PDU: {storescu_pdu} on both paths; Orthanc MaximumPduLength: {meta['archive_pdu'] or 'default (16384)'};",
                f"guard max PDU {meta['guard_pdu']}; guard forwarding workers: {meta['workers']}; ledger SQLite.",
            ],
        ),
        (
            "storescu sends PDUs no larger than the receiver accepts: the same storescu command on both paths, but its -pdu "
            "only enlarges the storescu -> guard leg (Orthanc's own limit applies to storescu -> Orthanc and guard -> Orthanc)."
        ),
        " ".join(
            [
                "Time to archive: from starting storescu until Orthanc /statistics counts every instance",
                f"(polled every {meta['poll_interval'] * 1000:.0f} ms). MB = 10^6 bytes of DICOM files. {repeat}",
            ],
        ),
        "Guard peak RSS: VmHWM of the guard's processes, summed, read just before it is stopped; sampled: max VmRSS every poll.",
        "All confirmed: from starting storescu until the guard's ledger shows every instance confirmed (polled every 0.2 s, not timed).",
        "Machine CPU %: busy share of all cores during the run (100 = every core busy); guard CPU: user + system time of its processes",
        "(the main process and, with --listener-process, its listener).",
    ]
    return "\n".join(lines)


def results_table(summaries: Sequence[SizeSummary]) -> str:
    """The main table: one row per path and size."""
    headers = ["path", "instances", "inst/s", "MB/s", "to archive s", "storescu s", "guard peak RSS MB"]
    rows = [
        [
            "storescu -> Orthanc" if run.path == DIRECT else "storescu -> guard -> Orthanc",
            str(run.size),
            _fmt(run.instances_per_second),
            _fmt(run.mb_per_second),
            _fmt(run.archive_seconds, 2),
            _fmt(run.storescu_seconds, 2),
            _fmt(rss_mb(run.guard_peak_rss_kib)),
        ]
        for s in summaries
        for run in (s.direct, s.guard)
    ]
    return _table(headers, rows)


def details_table(summaries: Sequence[SizeSummary]) -> str:
    """Diagnostics of the guard runs: ingest rate, CPU and the RSS cross-check."""
    headers = [
        "guard run",
        "ingest inst/s",
        "guard CPU s",
        "CPU ms/inst",
        "machine CPU %",
        "RSS at start MB",
        "sampled max RSS MB",
        "all confirmed s",
        "ledger states",
    ]
    rows = []
    for s in summaries:
        g, d = s.guard, s.direct
        per_instance = None if g.guard_cpu_seconds is None else 1000 * g.guard_cpu_seconds / g.size
        states = ", ".join(f"{k} {v}" for k, v in sorted(g.ledger_states.items())) or "-"
        rows.append(
            [
                str(g.size),
                _fmt(g.ingest_per_second),
                _fmt(g.guard_cpu_seconds),
                _fmt(per_instance, 2),
                f"{g.machine_cpu_percent:.0f} (direct {d.machine_cpu_percent:.0f})",
                _fmt(rss_mb(g.guard_start_rss_kib)),
                _fmt(rss_mb(g.guard_sampled_rss_kib)),
                _fmt(g.confirm_seconds, 2),
                states,
            ],
        )
    return _table(headers, rows)


def targets(summaries: Sequence[SizeSummary]) -> str:
    """Ratio guard/direct per size and whether each target is met (reported, not asserted)."""
    lines = []
    for s in summaries:
        ratio = "target met" if s.throughput_met else "target missed"
        rss = "target met" if s.rss_met else "target missed"
        lines.append(
            f"{s.size} instances: guard/direct throughput {s.ratio:.2f} (target >= {TARGET_RATIO}: {ratio}); "
            f"guard peak RSS {_fmt(s.peak_rss_mb)} MB (target < {TARGET_RSS_MB:.0f} MB: {rss})",
        )
    return "\n".join(lines)


def render(meta: dict[str, Any], runs: Sequence[RunResult]) -> str:
    """The whole printed report."""
    summaries = summarise(runs)
    return "\n\n".join([header(meta), results_table(summaries), details_table(summaries), targets(summaries)])


def _run_json(run: RunResult) -> dict[str, Any]:
    derived = {
        "instances_per_second": run.instances_per_second,
        "mb_per_second": run.mb_per_second,
        "ingest_per_second": run.ingest_per_second,
        "guard_peak_rss_mb": rss_mb(run.guard_peak_rss_kib),
        "guard_sampled_rss_mb": rss_mb(run.guard_sampled_rss_kib),
        "guard_start_rss_mb": rss_mb(run.guard_start_rss_kib),
    }
    return {**asdict(run), **derived}


def write_json(path: Path, meta: dict[str, Any], runs: Sequence[RunResult]) -> None:
    """Write every run, the summaries and the settings as JSON."""
    summaries = [
        {
            "size": s.size,
            "ratio_guard_over_direct": s.ratio,
            "throughput_target": TARGET_RATIO,
            "throughput_target_met": s.throughput_met,
            "guard_peak_rss_mb": s.peak_rss_mb,
            "rss_target_mb": TARGET_RSS_MB,
            "rss_target_met": s.rss_met,
        }
        for s in summarise(runs)
    ]
    document = {"meta": meta, "runs": [_run_json(r) for r in runs], "summary": summaries}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
