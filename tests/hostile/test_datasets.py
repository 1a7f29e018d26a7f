"""Hostile data sets in C-STORE: each gets a specific failure status and an audit record; nothing is kept.

Data sets are sent byte for byte from a raw socket (``store_raw``) so that the guard sees
exactly the damage, not what a well-behaved library would re-encode.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from guard.domain import status as st
from tests.hostile.conftest import audits_since
from tests.hostile.peer import IMPLICIT_LE, element, explicit, store_raw
from tests.support.datasets import make_instance, make_rejection_note, make_study
from tests.support.guard import GuardProcess
from tests.support.scu import send_files
from tests.support.waiting import wait_until

pytestmark = pytest.mark.interop

CT = b"1.2.840.10008.5.1.4.1.1.2\0"


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def header(sop_uid: str, *, study: str = "1.2.3.4", series: str = "1.2.3.4.1") -> bytes:
    """The leading elements of a CT data set in Explicit VR Little Endian."""
    return (
        explicit(0x0008, 0x0016, "UI", CT)
        + explicit(0x0008, 0x0018, "UI", _uid(sop_uid))
        + explicit(0x0008, 0x0060, "CS", b"CT")
        + explicit(0x0010, 0x0020, "LO", b"HOSTILE1")
        + explicit(0x0020, 0x000D, "UI", _uid(study))
        + explicit(0x0020, 0x000E, "UI", _uid(series))
    )


def _reason_audited(guard: GuardProcess, seq: int, reason: str) -> bool:
    return any(r["detail"].get("reason") == reason for r in audits_since(guard, seq))


def _expect(guard: GuardProcess, seq: int, status: int | None, expected: int, reason: str) -> None:
    assert status == expected, f"status {status!r}, expected 0x{expected:04X}\n{guard.log_tail()}"
    wait_until(lambda: _reason_audited(guard, seq, reason), 10, message=f"no audit record with reason {reason}")


def test_invalid_uid_in_the_data_set(hostile_guard: GuardProcess, contained: int) -> None:
    """A SOP Instance UID that is a path (``../../x``) is 0xC000 and a security alert; no file lands anywhere."""
    status = store_raw(hostile_guard.port, header("../../x"), sop_instance="../../x")
    _expect(hostile_guard, contained, status, st.CANNOT_UNDERSTAND, "invalid-uid")


def test_bad_vr(hostile_guard: GuardProcess, contained: int) -> None:
    """An element with the VR ``ZZ`` (none such, PS3.5 6.2) before the UIDs: 0xC000."""
    uid = generate_uid()
    data = explicit(0x0008, 0x0005, "ZZ", b"ISO_IR 100") + header(uid)
    _expect(hostile_guard, contained, store_raw(hostile_guard.port, data, sop_instance=uid), st.CANNOT_UNDERSTAND, "cannot-parse")


@pytest.mark.parametrize("length", [0xFFFFFFF0, 0x7FFFFFFF, 0xFFFFFFFE], ids=["huge", "max-signed", "negative-as-unsigned"])
def test_element_length_beyond_the_data(hostile_guard: GuardProcess, contained: int, length: int) -> None:
    """An OB element announcing gigabytes in a data set of a few hundred bytes: 0xC000."""
    uid = generate_uid()
    data = header(uid) + explicit(0x0009, 0x0010, "OB", b"\0" * 16, length=length)
    _expect(hostile_guard, contained, store_raw(hostile_guard.port, data, sop_instance=uid), st.CANNOT_UNDERSTAND, "cannot-parse")


def test_deeply_nested_sequences(hostile_guard: GuardProcess, contained: int) -> None:
    """Sequences nested 5,000 deep (undefined lengths, PS3.5 7.5) cannot exhaust the parser: 0xC000."""
    uid = generate_uid()
    depth = 5000
    opening = (
        struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + b"\xff\xff\xff\xff" + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    ) * depth
    closing = (struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)) * depth
    data = header(uid) + opening + closing
    _expect(hostile_guard, contained, store_raw(hostile_guard.port, data, sop_instance=uid), st.CANNOT_UNDERSTAND, "cannot-parse")


def test_transfer_syntax_that_lies(hostile_guard: GuardProcess, contained: int) -> None:
    """Implicit VR bytes sent on an Explicit VR Little Endian context: 0xC000, not stored under a false syntax."""
    uid = generate_uid()
    data = (
        element(0x0008, 0x0016, CT)
        + element(0x0008, 0x0018, _uid(uid))
        + element(0x0020, 0x000D, b"1.2.3.4\0")
        + element(0x0020, 0x000E, b"1.2.3.4.1\0")
    )
    _expect(hostile_guard, contained, store_raw(hostile_guard.port, data, sop_instance=uid), st.CANNOT_UNDERSTAND, "cannot-parse")


def test_zero_byte_data_set(hostile_guard: GuardProcess, contained: int) -> None:
    """A C-STORE whose data set is empty: 0xC000."""
    uid = generate_uid()
    status = store_raw(hostile_guard.port, b"", sop_instance=uid, syntax=IMPLICIT_LE)
    assert status in {st.CANNOT_UNDERSTAND, st.DATASET_DOES_NOT_MATCH_SOP_CLASS}
    wait_until(lambda: audits_since(hostile_guard, contained), 10, message="not audited")


def test_truncated_data_set(hostile_guard: GuardProcess, contained: int) -> None:
    """A data set cut in the middle of an element: 0xC000."""
    uid = generate_uid()
    data = header(uid)[:-7]
    _expect(hostile_guard, contained, store_raw(hostile_guard.port, data, sop_instance=uid), st.CANNOT_UNDERSTAND, "cannot-parse")


def test_data_set_over_the_size_limit(hostile_guard: GuardProcess, contained: int, tmp_path: Path) -> None:
    """A 3 MiB instance against a 2 MiB node.max_dataset_size: 0xA700, its partial file removed, audited."""
    path = make_instance(
        tmp_path / "big.dcm", study_uid=generate_uid(), series_uid=generate_uid(), sop_instance_uid=generate_uid(), rows=1100, columns=1400
    )
    [(_, status)] = send_files(hostile_guard.port, [path])
    _expect(hostile_guard, contained, status, st.OUT_OF_RESOURCES, "dataset-too-large")


def test_rejection_note_with_broken_references(hostile_guard: GuardProcess, contained: int, tmp_path: Path) -> None:
    """An IOCM rejection note whose referenced study UID is not a UID: 0x0124, no delete decided."""
    study = make_study(tmp_path / "study", 1)
    note = make_rejection_note(tmp_path / "note.dcm", study)
    ds = dcmread(note)
    ds.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID = "1.2.abc"
    ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence = Sequence([])
    ds.save_as(note)
    [(_, status)] = send_files(hostile_guard.port, [note])
    _expect(hostile_guard, contained, status, st.REFUSED_NOT_AUTHORIZED, "rejection-note-without-valid-study")
