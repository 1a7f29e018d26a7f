"""Audit retention: older records exported to a compressed JSON-lines file, then removed.

Off by default (``audit.retention_days = 0``: records are kept forever). When on, each run:

1. picks the records older than the retention period, up to the first newer one (and never
   past what the ATNA exporter has delivered);
2. writes them, oldest first, to ``audit-<first>-<last>.jsonl.gz`` in ``audit.retention_dir``:
   a header line (``kind``, ``first_seq``, ``last_seq``, ``prev_hash``, ``last_hash``), then
   one line per record exactly as stored (``detail`` as its stored text), so that the hash of
   every record can be recomputed; the file is fsynced and renamed into place;
3. in one transaction removes them, moves the chain's anchor to the last removed record, and
   writes an ``audit.exported`` record.

``guard audit verify --export FILE...`` checks the files' chains, their links to each other and
into the ledger, so the chain can be verified across every cut.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from guard.config.settings import Settings
from guard.ledger import audit_export
from guard.ledger.chain import ChainBreak, ChainReport, check
from guard.ledger.ledger import Ledger
from guard.services.audit.exporter import export_cursor

FILE_KIND = "guard-audit-export-1"


@dataclass(frozen=True)
class RetentionResult:
    """What one run exported and removed."""

    file: Path
    first_seq: int
    last_seq: int
    records: int
    last_hash: str


def _write_file(path: Path, header: dict[str, Any], rows: Iterator[dict[str, Any]]) -> tuple[int, str]:
    """Write header and rows to ``path`` durably; returns (records, hash of the last one)."""
    partial = path.with_name(path.name + ".partial")
    count, last_hash = 0, str(header["prev_hash"])
    with partial.open("wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb") as gz:
            gz.write((json.dumps(header) + "\n").encode())
            for row in rows:
                gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
                count += 1
                last_hash = row["hash"]
        raw.flush()
        os.fsync(raw.fileno())
    partial.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return count, last_hash


def apply_retention(settings: Settings, ledger: Ledger, *, now: datetime | None = None) -> RetentionResult | None:
    """Export and remove the records older than ``audit.retention_days``; None when off or nothing is due."""
    days = settings.audit.retention_days
    if days <= 0:
        return None
    now = now or ledger.clock()
    limit = export_cursor(ledger) if settings.audit.syslog_host else None
    if settings.audit.syslog_host and limit is None:
        return None  # the exporter has not delivered anything yet: keep everything for it
    cut = audit_export.retention_cut(ledger, now - timedelta(days=days), limit_seq=limit)
    start, end, prev_hash = cut.start, cut.end, cut.prev_hash
    if end <= start:
        return None
    folder = settings.retention_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"audit-{start + 1:012d}-{end:012d}.jsonl.gz"
    header = {"kind": FILE_KIND, "first_seq": start + 1, "last_seq": end, "prev_hash": prev_hash}
    count, last_hash = _write_file(path, header, audit_export.stored_records(ledger, start, end))
    audit_export.remove_exported(ledger, end=end, last_hash=last_hash, file_name=path.name, first_seq=start + 1, records=count, at=now)
    return RetentionResult(path, start + 1, end, count, last_hash)


def _file_rows(lines: Iterator[str]) -> Iterator[SimpleNamespace]:
    """Records of an export file, with the attributes ``walk`` expects (the time parsed back)."""
    for line in lines:
        fields = json.loads(line)
        fields["at"] = datetime.fromisoformat(fields["at"])
        yield SimpleNamespace(**fields)


def verify_export(path: Path, *, expected_prev: str | None = None) -> tuple[ChainReport, dict[str, Any]]:
    """Check one export file's chain (and that it starts after ``expected_prev`` when given)."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        header = json.loads(next(lines))
        if header.get("kind") != FILE_KIND:
            broken = ChainBreak(0, "unlinked", f"{path.name} is not a guard audit export file")
            return ChainReport(0, None, None, None, broken), header
        first = int(header["first_seq"])
        if expected_prev is not None and header["prev_hash"] != expected_prev:
            broken = ChainBreak(first, "unlinked", f"{path.name} does not follow the file before it")
            return ChainReport(0, None, None, None, broken), header
        report = check(_file_rows(lines), expected_seq=first, expected_prev=str(header["prev_hash"]))
    if report.ok and report.last_seq != int(header["last_seq"]):
        shown = report.last_seq if report.last_seq is not None else first - 1
        broken = ChainBreak(shown + 1, "missing", f"{path.name} ends at record {shown}, its header says {header['last_seq']}")
        return ChainReport(report.checked, report.first_seq, report.last_seq, None, broken), header
    return report, header
