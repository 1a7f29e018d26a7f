"""P-DATA-TF PDUs built by hand (``guard.dicom.pdata``): framing, the C-STORE-RQ command set, the File Meta read."""

from __future__ import annotations

import struct
from io import BytesIO
from typing import TYPE_CHECKING

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as strat
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import dsutils
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE

from guard.dicom.pdata import (
    COMMAND,
    LAST,
    UNLIMITED_FRAGMENT,
    DataSetFrames,
    c_store_rq,
    command_pdus,
    file_meta_length,
    read_part10_header,
)
from guard.domain.digest import HEADER_LENGTH, dataset_offset

if TYPE_CHECKING:
    from pathlib import Path

_uids = (
    strat.lists(strat.integers(0, 10**12), min_size=1, max_size=10)
    .map(lambda parts: "1." + ".".join(map(str, parts)))
    .filter(lambda uid: len(uid) <= 64)
)
#: Peer maximum lengths: 0 (no limit), the smallest that leaves room for one byte, odd and even ones, the usual ones.
_max_lengths = strat.sampled_from([0, 7, 8, 4099, 16382, 16384]) | strat.integers(min_value=7, max_value=70000)


def _parse(pdu: bytes) -> tuple[int, int, bytes]:
    """One P-DATA-TF with one PDV (PS3.8 9.3.5): checks its headers, returns (context ID, control byte, fragment)."""
    pdu_type, reserved, length = struct.unpack_from(">BBL", pdu)
    assert (pdu_type, reserved) == (0x04, 0)
    assert length == len(pdu) - 6, "the PDU length counts everything after its 6-byte header"
    item_length, context_id, control = struct.unpack_from(">LBB", pdu, 6)
    assert item_length == len(pdu) - 10, "one PDV item filling the PDU: its length counts the context ID, control byte and fragment"
    return context_id, control, pdu[12:]


def _within(pdu: bytes, max_length: int) -> bool:
    """Whether the PDU's variable field (its length field) is within the peer's maximum (PS3.8 D.1; 0: no limit)."""
    return max_length == 0 or len(pdu) - 6 <= max_length


@settings(max_examples=300, deadline=None)
@given(data=strat.binary(max_size=200_000), max_length=_max_lengths, context_id=strat.integers(1, 255).filter(lambda n: n % 2))
@example(data=b"", max_length=16384, context_id=1)
@example(data=b"\x01" * (16384 - 6), max_length=16384, context_id=1)
@example(data=b"\x01" * (16384 - 5), max_length=16384, context_id=3)
@example(data=b"\x02" * (UNLIMITED_FRAGMENT + 1), max_length=0, context_id=5)
def test_a_data_set_reassembles_from_its_pdus_exactly(data: bytes, max_length: int, context_id: int) -> None:
    """Any data set, any maximum length: the fragments joined are its bytes; each PDU within the limit, flagged data, last on the last."""
    pdus = [bytes(view) for view in DataSetFrames(context_id, max_length).frames(BytesIO(data), len(data))]
    parsed = [_parse(pdu) for pdu in pdus]
    assert b"".join(fragment for _, _, fragment in parsed) == data
    assert all(_within(pdu, max_length) for pdu in pdus)
    assert [cx for cx, _, _ in parsed] == [context_id] * len(pdus)
    assert [control for _, control, _ in parsed] == [0] * (len(pdus) - 1) + [LAST]
    assert all(fragment for _, _, fragment in parsed[:-1]), "no empty fragment but the only one of an empty data set"


@settings(max_examples=200, deadline=None)
@given(command=strat.binary(min_size=1, max_size=3000), max_length=_max_lengths)
def test_a_command_set_reassembles_from_its_pdus_exactly(command: bytes, max_length: int) -> None:
    """Any command set: command flag on every fragment, last on the last only, each PDU within the limit."""
    pdus = command_pdus(command, 1, max_length)
    parsed = [_parse(pdu) for pdu in pdus]
    assert b"".join(fragment for _, _, fragment in parsed) == command
    assert all(_within(pdu, max_length) for pdu in pdus)
    assert [control for _, control, _ in parsed] == [COMMAND] * (len(pdus) - 1) + [COMMAND | LAST]


def test_a_file_shorter_than_its_data_set_says_raises() -> None:
    """A file that ends early is an error, never a short message sent as complete."""
    with pytest.raises(EOFError):
        list(DataSetFrames(1, 16384).frames(BytesIO(b"\0" * 100), 40000))


def test_a_maximum_length_without_room_for_a_fragment_is_refused() -> None:
    """A peer maximum of 6 or less leaves no byte for data after the PDV header."""
    with pytest.raises(ValueError, match="no room"):
        DataSetFrames(1, 6)


@settings(max_examples=100, deadline=None)
@given(sop_class=_uids, sop_instance=_uids, message_id=strat.integers(0, 0xFFFF), priority=strat.sampled_from([0, 1, 2]))
def test_the_command_set_is_what_pynetdicom_encodes(sop_class: str, sop_instance: str, message_id: int, priority: int) -> None:
    """The C-STORE-RQ command set written by hand is byte for byte pydicom's encoding of pynetdicom's message."""
    primitive = C_STORE()
    primitive.MessageID, primitive.Priority = message_id, priority
    primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID = sop_class, sop_instance
    primitive._dataset_path = ("unused", 0)  # how send_c_store marks a data set sent from a file
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    expected = dsutils.encode(message.command_set, is_implicit_vr=True, is_little_endian=True)
    assert c_store_rq(message_id, sop_class, sop_instance, priority) == expected


_ae_titles = strat.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=16)


@settings(max_examples=100, deadline=None)
@given(
    sop_class=_uids,
    sop_instance=_uids,
    message_id=strat.integers(0, 0xFFFF),
    originator_ae=_ae_titles,
    originator_id=strat.integers(0, 0xFFFF),
)
@example(sop_class="1.2", sop_instance="1.2.3", message_id=1, originator_ae="ODD", originator_id=7)
def test_a_sub_operation_command_set_is_what_pynetdicom_encodes(
    sop_class: str, sop_instance: str, message_id: int, originator_ae: str, originator_id: int
) -> None:
    """With a Move Originator (a C-MOVE sub-operation), byte for byte what pynetdicom encodes for ``send_c_store``."""
    primitive = C_STORE()
    primitive.MessageID, primitive.Priority = message_id, 2
    primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID = sop_class, sop_instance
    primitive.MoveOriginatorApplicationEntityTitle = originator_ae
    primitive.MoveOriginatorMessageID = originator_id
    primitive._dataset_path = ("unused", 0)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    expected = dsutils.encode(message.command_set, is_implicit_vr=True, is_little_endian=True)
    assert c_store_rq(message_id, sop_class, sop_instance, originator=(originator_ae, originator_id)) == expected


def _write_file(path: Path, sop_class: str, sop_instance: str, syntax: str, *, extra_meta: bool) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = sop_class, sop_instance, "PDATA"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, sop_instance
    ds.file_meta.TransferSyntaxUID = syntax
    if extra_meta:
        ds.file_meta.SourceApplicationEntityTitle = "PACS"
        ds.file_meta.PrivateInformationCreatorUID = "1.2.3"
        ds.file_meta.PrivateInformation = b"\x01\x02\x03\x04"
    ds.save_as(path, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)


@settings(max_examples=40, deadline=None)
@given(
    sop_class=_uids,
    sop_instance=_uids,
    syntax=strat.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
    extra_meta=strat.booleans(),
)
def test_the_file_meta_is_read_as_pydicom_reads_it(
    tmp_path_factory: pytest.TempPathFactory, sop_class: str, sop_instance: str, syntax: str, extra_meta: bool
) -> None:
    """SOP Class, SOP Instance and Transfer Syntax UIDs and the data set offset agree with pydicom's reading of the file."""
    path = tmp_path_factory.mktemp("meta") / "instance.dcm"
    _write_file(path, sop_class, sop_instance, syntax, extra_meta=extra_meta)
    data = path.read_bytes()
    needed = file_meta_length(data[:HEADER_LENGTH])
    assert needed == dataset_offset(data[:HEADER_LENGTH])
    header = read_part10_header(data[:needed])
    meta = dcmread(path).file_meta
    assert header is not None
    assert (header.sop_class_uid, header.sop_instance_uid, header.transfer_syntax) == (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
        meta.TransferSyntaxUID,
    )
    assert header.dataset_offset == needed


def test_a_file_meta_that_cannot_be_read_here_is_left_to_pynetdicom() -> None:
    """Not Part 10, a group cut short, an element of another group inside it: no header (the caller falls back)."""
    preamble = b"\0" * 128 + b"DICM"
    stray = struct.pack("<HH2sH", 8, 0x16, b"UI", 2) + b"1\0"
    group = struct.pack("<HH2sHL", 2, 0, b"UL", 4, len(stray))
    assert read_part10_header(b"not dicom" * 20) is None
    assert read_part10_header(preamble + group) is None, "the group says more bytes follow than there are"
    assert read_part10_header(preamble + group + stray) is None, "an element outside group 0002"
