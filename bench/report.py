"""The printed report and the JSON results: figures and targets, never assertions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.procfs import KIB
from bench.runs import DIRECT, THROUGH_GUARD, RunResult
from bench.syncs import SyncCosts
from bench.syncs import render as render_syncs

#: The guard's pass-through must reach at least this share of the direct throughput (issue targets 2 and 4).
TARGET_RATIO = 0.8
#: The sending PACS must not wait longer for the guard than for the archive itself (target 1).
TARGET_INGEST_RATIO = 1.0
#: Guard CPU per instance, all its processes, user + system (target 3).
TARGET_CPU_MS = 8.0
#: Every instance confirmed within this many seconds after the last one reached the archive (target 2).
TARGET_CONFIRM_LAG_S = 2.0
#: The guard's peak resident set must stay under this many megabytes (10^6 bytes), whatever the study size.
TARGET_RSS_MB = 200.0


def rss_mb(kib: int | None) -> float | None:
    """KiB (as ``/proc`` reports) to megabytes of 10^6 bytes."""
    return None if kib is None else kib * KIB / 1e6


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _met(ok: bool | None, /) -> str:  # noqa: FBT001 - a verdict, positional by nature
    return "not measured" if ok is None else ("met" if ok else "missed")


def median_run(runs: Sequence[RunResult]) -> RunResult:
    """The run with the median time to archive (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.archive_seconds)
    return ordered[(len(ordered) - 1) // 2]


def per_instance_ms(seconds: float | None, count: int) -> float | None:
    """Milliseconds of CPU an instance."""
    return None if seconds is None else 1000 * seconds / count


@dataclass(frozen=True)
class SizeSummary:
    """Guard (one ledger) against direct for one study size and number of senders."""

    size: int
    senders: int
    ledger: str
    direct: RunResult
    guard: RunResult

    @property
    def label(self) -> str:
        """What this row is: size, senders, ledger."""
        return f"{self.size} inst, {self.senders} sender(s), {self.ledger}"

    @property
    def ratio(self) -> float:
        """Guard throughput over direct throughput (time to archive)."""
        return self.guard.instances_per_second / self.direct.instances_per_second

    @property
    def ingest_ratio(self) -> float:
        """Direct storescu time over guard storescu time: above 1 the PACS waits less for the guard than for the archive."""
        return self.direct.storescu_seconds / self.guard.storescu_seconds

    @property
    def cpu_ms(self) -> float | None:
        """Guard CPU per instance, milliseconds."""
        return per_instance_ms(self.guard.guard_cpu_seconds, self.guard.size)

    @property
    def confirm_lag(self) -> float | None:
        """Seconds from the last instance in the archive until every instance was confirmed."""
        g = self.guard
        return None if g.confirm_seconds is None else max(0.0, g.confirm_seconds - g.archive_seconds)

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
    """Pair the median direct run with the median guard run of each ledger, per size and number of senders."""
    summaries = []
    for size, senders in sorted({(r.size, r.senders) for r in runs}):
        same = [r for r in runs if r.size == size and r.senders == senders]
        direct = [r for r in same if r.path == DIRECT]
        for ledger in sorted({r.ledger for r in same if r.path == THROUGH_GUARD and r.ledger}):
            guard = [r for r in same if r.path == THROUGH_GUARD and r.ledger == ledger]
            if direct and guard:
                summaries.append(SizeSummary(size, senders, ledger, median_run(direct), median_run(guard)))
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
        f"Studies: synthetic CT, 512x512 16-bit, about {meta['instance_bytes'] / 1e6:.2f} MB a file; one storescu association per study",
        "(with several senders, the instances are split into that many studies, sent at once).",
        " ".join(
            [
                f"storescu max PDU: {storescu_pdu} on both paths; Orthanc MaximumPduLength: {meta['archive_pdu'] or 'default (16384)'};",
                f"guard max PDU {meta['guard_pdu']}; guard forwarding workers: {meta['workers']} (nice +{meta.get('forward_nice', 0)});",
                f"ledger(s): {', '.join(meta.get('ledgers', ['sqlite']))} (PostgreSQL: a fresh database on the local server).",
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
        "Guard peak RSS: VmHWM of the guard's processes, summed, read just before it is stopped; sampled: max VmRSS of the",
        "processes, summed, every poll; RSS at start likewise; per process: the VmHWM of each, the main process first.",
        "All confirmed: from starting storescu until the guard's ledger shows every instance confirmed (polled every 0.2 s, not timed).",
        "Machine CPU %: busy share of all cores during the run (100 = every core busy); guard CPU: user + system time of its processes",
        "(the main process and, with --listener-process, its listener).",
    ]
    if "syncs" in meta:
        lines.append(render_syncs(SyncCosts(**meta["syncs"])))
    return "\n".join(lines)


def results_table(summaries: Sequence[SizeSummary]) -> str:
    """The main table: one row per path and size."""
    headers = ["path", "instances", "senders", "inst/s", "MB/s", "to archive s", "storescu s", "Orthanc CPU ms/inst", "guard peak RSS MB"]
    rows = [
        [
            "storescu -> Orthanc" if run.path == DIRECT else f"storescu -> guard ({run.ledger}) -> Orthanc",
            str(run.size),
            str(run.senders),
            _fmt(run.instances_per_second),
            _fmt(run.mb_per_second),
            _fmt(run.archive_seconds, 2),
            _fmt(run.storescu_seconds, 2),
            _fmt(per_instance_ms(run.archive_cpu_seconds, run.size), 2),
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
        "peak RSS per process MB",
        "all confirmed s",
        "ledger states",
    ]
    rows = []
    for s in summaries:
        g, d = s.guard, s.direct
        per_instance = s.cpu_ms
        states = ", ".join(f"{k} {v}" for k, v in sorted(g.ledger_states.items())) or "-"
        rows.append(
            [
                s.label,
                _fmt(g.ingest_per_second),
                _fmt(g.guard_cpu_seconds),
                _fmt(per_instance, 2),
                f"{g.machine_cpu_percent:.0f} (direct {d.machine_cpu_percent:.0f})",
                _fmt(rss_mb(g.guard_start_rss_kib)),
                _fmt(rss_mb(g.guard_sampled_rss_kib)),
                " + ".join(_fmt(rss_mb(part)) for part in g.guard_peak_rss_parts_kib) or "-",
                _fmt(g.confirm_seconds, 2),
                states,
            ],
        )
    return _table(headers, rows)


def targets(summaries: Sequence[SizeSummary]) -> str:
    """Each issue target per row, as a ratio or figure against the direct path of the same run, met or missed (never asserted)."""
    lines = []
    for s in summaries:
        cpu = s.cpu_ms
        lag = s.confirm_lag
        archive_cpu = per_instance_ms(s.direct.archive_cpu_seconds, s.direct.size)
        cpu_met = _met(None if cpu is None else cpu <= TARGET_CPU_MS)
        lag_met = _met(None if lag is None else lag <= TARGET_CONFIRM_LAG_S)
        lines.extend(
            [
                f"{s.label}:",
                (
                    f"  ingest as the PACS sees it (direct storescu time / guard storescu time) {s.ingest_ratio:.2f}"
                    f" (target >= {TARGET_INGEST_RATIO}: {_met(s.ingest_ratio >= TARGET_INGEST_RATIO)})"
                ),
                (
                    f"  pass-through guard/direct {s.ratio:.2f} (target >= {TARGET_RATIO}: {_met(s.throughput_met)});"
                    f" all confirmed {_fmt(lag, 2)} s after the last reached the archive"
                    f" (target <= {TARGET_CONFIRM_LAG_S:.0f} s: {lag_met})"
                ),
                (
                    f"  guard CPU {_fmt(cpu, 2)} ms an instance (target <= {TARGET_CPU_MS:.0f}: {cpu_met});"
                    f" Orthanc's own in the direct run {_fmt(archive_cpu, 2)} ms"
                ),
                f"  guard peak RSS {_fmt(s.peak_rss_mb)} MB (target < {TARGET_RSS_MB:.0f} MB: {_met(s.rss_met)})",
            ],
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
        "guard_peak_rss_parts_mb": [rss_mb(part) for part in run.guard_peak_rss_parts_kib],
    }
    return {**asdict(run), **derived}


def write_json(path: Path, meta: dict[str, Any], runs: Sequence[RunResult]) -> None:
    """Write every run, the summaries and the settings as JSON."""
    summaries = [
        {
            "size": s.size,
            "senders": s.senders,
            "ledger": s.ledger,
            "ratio_guard_over_direct": s.ratio,
            "ingest_ratio_direct_over_guard": s.ingest_ratio,
            "guard_cpu_ms_per_instance": s.cpu_ms,
            "confirm_lag_seconds": s.confirm_lag,
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
