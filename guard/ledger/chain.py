"""The audit log's hash chain: a canonical encoding of a record, its hash, and the walk that checks it.

Each record stores ``prev_hash`` (the hash of the record before it, or of the retention anchor,
or ``GENESIS`` for the first) and ``hash`` = SHA-256 of the canonical encoding of its own
fields together with ``prev_hash``. Changing a byte of a record, removing one or swapping two
breaks the chain at a record whose sequence number the walk reports.

The canonical encoding is a JSON array of a version tag and the fields in a fixed order, with
the time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` and ``detail`` as the exact text stored in the
ledger, UTF-8, no whitespace. It is part of the stored format: changing it needs a new version
tag, and the walk must keep accepting the old one.

Version 2 (``guard-audit-2``) adds the ``node`` that wrote the record, after ``prev_hash``; a
record without a node (written before nodes existed) keeps version 1, so an older chain still
verifies unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: ``prev_hash`` of the very first record.
GENESIS = "0" * 64

_VERSION = "guard-audit-1"
_VERSION_NODE = "guard-audit-2"

#: The fields of a record covered by its hash, in encoding order.
HASHED_FIELDS = (
    "seq",
    "at",
    "event",
    "outcome",
    "actor",
    "peer_address",
    "patient_id",
    "study_uid",
    "series_uid",
    "sop_instance_uid",
    "detail",
    "prev_hash",
)

#: Fields hashed only when set (a version-2 record), in encoding order after ``HASHED_FIELDS``.
OPTIONAL_FIELDS = ("node",)

#: Every stored field of a record that its hash covers.
RECORD_FIELDS = (*HASHED_FIELDS, *OPTIONAL_FIELDS)


def canonical_time(value: datetime) -> str:
    """A record time as hashed: UTC, microseconds, ``Z``; naive values are UTC (SQLite)."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(fields: dict[str, Any]) -> bytes:
    """The canonical encoding of a record given as a mapping of ``HASHED_FIELDS`` (and ``node``, when set)."""
    node = fields.get("node")
    values: list[Any] = [_VERSION if node is None else _VERSION_NODE]
    for name in HASHED_FIELDS:
        value = fields[name]
        if name == "at":
            value = canonical_time(value)
        values.append(value)
    if node is not None:
        values.append(node)
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(fields: dict[str, Any]) -> str:
    """The SHA-256 (hex) of a record's canonical encoding."""
    return hashlib.sha256(canonical(fields)).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    """The first place where the chain does not hold."""

    seq: int
    kind: str  # "altered", "missing", "out-of-order" or "unlinked"
    message: str


@dataclass(frozen=True)
class ChainReport:
    """The outcome of a walk: how many records were checked and the first break, if any."""

    checked: int
    first_seq: int | None
    last_seq: int | None
    last_hash: str | None
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        """Whether every record checked holds."""
        return self.broken is None


def walk(rows: Iterable[Any], *, expected_seq: int | None, expected_prev: str | None) -> Iterator[tuple[Any, ChainBreak | None]]:
    """Check ``rows`` (in ``seq`` order; objects with the hashed fields and ``hash`` as attributes).

    ``expected_seq``/``expected_prev`` are what the first row must have (None: take the first
    row's own values, for a walk over a tail). Yields ``(row, break or None)`` per row and stops
    after the first break.
    """
    for row in rows:
        fields: dict[str, Any] = {name: getattr(row, name) for name in HASHED_FIELDS}
        fields.update({name: getattr(row, name, None) for name in OPTIONAL_FIELDS})
        seq = int(fields["seq"])
        problem: ChainBreak | None = None
        if expected_seq is not None and seq != expected_seq:
            if seq > expected_seq:
                gone = f"record {expected_seq}" if seq == expected_seq + 1 else f"records {expected_seq} to {seq - 1}"
                problem = ChainBreak(expected_seq, "missing", f"{gone} missing: the chain jumps from {expected_seq - 1} to {seq}")
            else:
                problem = ChainBreak(seq, "out-of-order", f"record {seq} appears after record {expected_seq - 1}")
        elif expected_prev is not None and fields["prev_hash"] != expected_prev:
            problem = ChainBreak(
                seq, "unlinked", f"record {seq} does not follow the record before it (a record was removed, altered or reordered)"
            )
        elif record_hash(fields) != row.hash:
            problem = ChainBreak(seq, "altered", f"record {seq} was altered: its content does not match its hash")
        yield row, problem
        if problem is not None:
            return
        expected_seq = seq + 1
        expected_prev = row.hash


def check(
    rows: Iterable[Any], *, expected_seq: int | None, expected_prev: str | None, progress: Callable[[int], None] | None = None
) -> ChainReport:
    """Walk ``rows`` (see ``walk``) and sum it up; ``progress`` gets the count every 1,000 records and at the end."""
    checked = 0
    first: int | None = None
    last: Any = None
    for row, problem in walk(rows, expected_seq=expected_seq, expected_prev=expected_prev):
        checked += 1
        first = int(row.seq) if first is None else first
        if problem is not None:
            if progress is not None:
                progress(checked)
            return ChainReport(checked, first, None if last is None else int(last.seq), None, problem)
        last = row
        if progress is not None and checked % 1000 == 0:
            progress(checked)
    if progress is not None:
        progress(checked)
    if last is None:
        return ChainReport(checked, first, None, None, None)
    return ChainReport(checked, first, int(last.seq), str(last.hash), None)
