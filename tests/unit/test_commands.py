"""Command sets written directly (``guard.runtime.commands``) are byte for byte what pydicom writes."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as strat
from pydicom import Dataset
from pynetdicom import dimse_messages, dsutils
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_MOVE, C_STORE, N_ACTION, N_EVENT_REPORT

from guard.runtime.commands import encode_command, fast_command_bytes, store_response_bytes

_uids = strat.lists(strat.integers(1, 99999), min_size=1, max_size=8).map(lambda parts: "1.2." + ".".join(map(str, parts)))
_ae = strat.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", min_size=1, max_size=16)
_ids = strat.integers(min_value=0, max_value=0xFFFF)
_comments = strat.text(alphabet=strat.characters(min_codepoint=32, max_codepoint=126), max_size=64)


def _via_message(primitive: Any) -> Dataset:
    """The command set pynetdicom builds for ``primitive`` (a request, or a response when it answers a message)."""
    kind = "RQ" if getattr(primitive, "MessageIDBeingRespondedTo", None) is None else "RSP"
    message = getattr(dimse_messages, f"{type(primitive).__name__}_{kind}")()
    message.primitive_to_message(primitive)
    return message.command_set


def _c_store(sop_class: str, sop_instance: str, **fields: Any) -> C_STORE:
    """A C-STORE primitive for ``sop_instance`` with ``fields`` set (a request or, with a message answered, a response)."""
    primitive = C_STORE()
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    for name, value in fields.items():
        setattr(primitive, name, value)
    return primitive


def _same(primitive: Any) -> None:
    ds = _via_message(primitive)
    expected = dsutils.encode(ds, is_implicit_vr=True, is_little_endian=True)
    assert expected is not None
    assert fast_command_bytes(ds) == expected, "written directly, and the same bytes"
    assert encode_command(ds, is_implicit_vr=True, is_little_endian=True) == expected


@settings(max_examples=60, deadline=None)
@given(sop_class=_uids, sop_instance=_uids, message_id=_ids, priority=strat.sampled_from([0, 1, 2]), originator=strat.none() | _ae)
def test_c_store_requests(sop_class: str, sop_instance: str, message_id: int, priority: int, originator: str | None) -> None:
    """A C-STORE-RQ, with and without a Move Originator."""
    rq = _c_store(sop_class, sop_instance, MessageID=message_id, Priority=priority)
    if originator is not None:
        rq.MoveOriginatorApplicationEntityTitle = originator
        rq.MoveOriginatorMessageID = message_id
    rq.DataSet = BytesIO(b"\x00" * 8)  # presence only
    _same(rq)


@settings(max_examples=60, deadline=None)
@given(
    sop_class=_uids,
    sop_instance=_uids,
    message_id=_ids,
    status=strat.sampled_from([0x0000, 0xA700, 0xC000, 0x0124, 0xB000]),
    comment=strat.none() | _comments,
)
@example(sop_class="1.2.1", sop_instance="1.2.1", message_id=0, status=0xC000, comment="\\")
@example(sop_class="1.2.1", sop_instance="1.2.1", message_id=7, status=0xA700, comment="disk full\\retry later ")
def test_c_store_responses(sop_class: str, sop_instance: str, message_id: int, status: int, comment: str | None) -> None:
    """A C-STORE-RSP as the listener answers it, with an Error Comment on failure (a backslash in it makes several values)."""
    rsp = _c_store(sop_class, sop_instance, MessageIDBeingRespondedTo=message_id, Status=status)
    if comment:
        rsp.ErrorComment = comment
    _same(rsp)
    # The listener's own path (DecodeGuard.send_msg) builds the same bytes without a message object.
    assert store_response_bytes(rsp) == dsutils.encode(_via_message(rsp), is_implicit_vr=True, is_little_endian=True)


@settings(max_examples=20, deadline=None)
@given(message_id=_ids, remaining=strat.integers(0, 0xFFFF), done=strat.integers(0, 0xFFFF))
def test_echo_find_move_and_normalised(message_id: int, remaining: int, done: int) -> None:
    """C-ECHO, C-FIND, C-MOVE (with sub-operation counts), N-ACTION and N-EVENT-REPORT requests and responses."""
    echo = C_ECHO()
    echo.MessageID = message_id
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    _same(echo)
    find = C_FIND()
    find.MessageIDBeingRespondedTo = message_id
    find.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    find.Status = 0xFF00
    find.Identifier = BytesIO(b"\x00" * 8)
    _same(find)
    move = C_MOVE()
    move.MessageIDBeingRespondedTo = message_id
    move.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    move.Status = 0xFF00
    move.NumberOfRemainingSuboperations = remaining
    move.NumberOfCompletedSuboperations = done
    move.NumberOfFailedSuboperations = 0
    move.NumberOfWarningSuboperations = 0
    _same(move)
    action = N_ACTION()
    action.MessageID = message_id
    action.RequestedSOPClassUID = "1.2.840.10008.1.20.1"
    action.RequestedSOPInstanceUID = "1.2.840.10008.1.20.1.1"
    action.ActionTypeID = 1
    action.ActionInformation = BytesIO(b"\x00" * 8)
    _same(action)
    report = N_EVENT_REPORT()
    report.MessageIDBeingRespondedTo = message_id
    report.AffectedSOPClassUID = "1.2.840.10008.1.20.1"
    report.AffectedSOPInstanceUID = "1.2.840.10008.1.20.1.1"
    report.EventTypeID = 1
    report.Status = 0x0000
    _same(report)


def test_what_it_does_not_handle_goes_to_pydicom() -> None:
    """Non-ASCII text and elements outside group 0000 are left to pydicom (and come out as pydicom writes them)."""
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.AffectedSOPClassUID = "1.2.3"
    rsp.AffectedSOPInstanceUID = "1.2.3.4"
    rsp.Status = 0xC000
    rsp.ErrorComment = "ungültig"
    ds = _via_message(rsp)
    assert store_response_bytes(rsp) is None
    assert fast_command_bytes(ds) is None
    assert encode_command(ds, is_implicit_vr=True, is_little_endian=True) == dsutils.encode(ds, is_implicit_vr=True, is_little_endian=True)
    other = Dataset()
    other.PatientID = "X"
    assert fast_command_bytes(other) is None


def test_a_store_response_with_an_offending_element_is_left_to_pynetdicom() -> None:
    """An Offending Element (AT, several values) is not written directly: the listener sends that response through pynetdicom."""
    rsp = _c_store("1.2.3", "1.2.3.4", MessageIDBeingRespondedTo=3, Status=0xA900)
    rsp.OffendingElement = [0x00100010, 0x00100020]
    assert store_response_bytes(rsp) is None
    minimal = C_STORE()
    minimal.MessageIDBeingRespondedTo = 3
    minimal.Status = 0x0000
    assert store_response_bytes(minimal) == dsutils.encode(_via_message(minimal), is_implicit_vr=True, is_little_endian=True)
