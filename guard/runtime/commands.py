"""DIMSE command sets encoded directly, instead of through pydicom's general data set writer.

Every DIMSE message starts with a command set: a handful of group 0000 elements (UIDs, a
message ID, a status, perhaps an error comment), always in Implicit VR Little Endian (PS3.7
6.3.1). pynetdicom encodes it twice per message (once to compute the Command Group Length, once
to send it) with pydicom's ``write_dataset``, which is made for any data set of any transfer
syntax; in the profile of a 200-instance send the C-STORE response's encoding alone took about
a sixth of the receiving thread's time.

``encode_command`` writes those elements itself (PS3.5 7.1.2: tag, 32-bit length, value padded
to even length, UIDs with a NUL and text with a space). It handles only what command sets
hold: single-valued UI, US and UL elements and ASCII text in AE, CS, LO, SH and ST (several
text values, as an Error Comment with a backslash becomes, joined back as pydicom joins them).
Anything else (a multi-valued UI or US element, an AT element, non-ASCII text, an element
outside group 0000, another encoding) goes to pynetdicom's own ``encode``, so the bytes on the
wire are what pynetdicom would have sent either way (``tests/unit/test_commands.py`` compares both).
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom import Dataset
from pydicom.multival import MultiValue
from pynetdicom import dimse_messages, dsutils

_TEXT_PAD = {"AE": b" ", "CS": b" ", "LO": b" ", "SH": b" ", "ST": b" ", "UI": b"\0"}
_INTEGER = {"US": struct.Struct("<H"), "UL": struct.Struct("<L")}
_HEADER = struct.Struct("<HHL")

_pydicom_encode = dsutils.encode


def _joined_text(vr: str, value: Any) -> Any:
    """Several text values as pydicom writes them: pydicom splits text at backslashes on assignment and joins it back."""
    if isinstance(value, MultiValue) and vr != "UI" and all(isinstance(item, str) for item in value):
        return "\\".join(value)
    return value


def _value_bytes(vr: str, value: Any) -> bytes | None:
    """The encoded value of one element, or None when this module does not handle it."""
    if value is None or value == "":
        return b""
    pad = _TEXT_PAD.get(vr)
    if pad is not None:
        value = _joined_text(vr, value)
        if not isinstance(value, str) or not value.isascii():
            return None
        data = value.encode("ascii")
        return data + pad if len(data) % 2 else data
    packer = _INTEGER.get(vr)
    if packer is not None and type(value) is int:
        try:
            return packer.pack(value)
        except struct.error:
            return None
    return None


def fast_command_bytes(ds: Dataset) -> bytes | None:
    """The Implicit VR Little Endian encoding of command set ``ds``, or None when it holds something else."""
    parts: list[bytes] = []
    for elem in ds:
        tag = int(elem.tag)
        if tag >> 16 != 0:
            return None
        data = _value_bytes(str(elem.VR), elem.value)
        if data is None:
            return None
        parts.append(_HEADER.pack(0, tag & 0xFFFF, len(data)))
        parts.append(data)
    return b"".join(parts)


def encode_command(ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> bytes | None:  # noqa: FBT001, FBT002 - pynetdicom's signature
    """Pynetdicom's ``dsutils.encode``, with command sets (Implicit VR Little Endian, group 0000) written directly."""
    if is_implicit_vr and is_little_endian and not deflated:
        encoded = fast_command_bytes(ds)
        if encoded is not None:
            return encoded
    return _pydicom_encode(ds, is_implicit_vr, is_little_endian, deflated)


#: C-STORE-RSP (PS3.7 9.3.1.2), after the Command Group Length: (element, VR, primitive attribute or fixed value).
_STORE_RESPONSE: tuple[tuple[int, str, str | int], ...] = (
    (0x0002, "UI", "AffectedSOPClassUID"),
    (0x0100, "US", 0x8001),  # Command Field: C-STORE-RSP
    (0x0120, "US", "MessageIDBeingRespondedTo"),
    (0x0800, "US", 0x0101),  # Command Data Set Type: no data set
    (0x0900, "US", "Status"),
    (0x0902, "LO", "ErrorComment"),
    (0x1000, "UI", "AffectedSOPInstanceUID"),
)


def store_response_bytes(primitive: Any) -> bytes | None:
    """The command set pynetdicom would encode for C-STORE response ``primitive``, or None when this module does not handle it.

    pynetdicom builds a message object and a pydicom data set for every response and encodes
    that; the response to a C-STORE has a fixed list of elements (an absent value is left out,
    as pynetdicom leaves it out). An Offending Element (AT, several values) or a value this
    module does not write gives None: the caller sends through pynetdicom.
    """
    if primitive.OffendingElement is not None:
        return None
    parts: list[bytes] = []
    for element, vr, source in _STORE_RESPONSE:
        value = getattr(primitive, source) if isinstance(source, str) else source
        if value is None:
            continue
        data = _value_bytes(vr, value)
        if data is None:
            return None
        parts.append(_HEADER.pack(0, element, len(data)))
        parts.append(data)
    body = b"".join(parts)
    return _HEADER.pack(0, 0, 4) + _INTEGER["UL"].pack(len(body)) + body


def install() -> None:
    """Encode the command sets of every DIMSE message with ``encode_command`` (pynetdicom's ``dimse_messages`` only)."""
    dimse_messages.encode = encode_command  # type: ignore[attr-defined]
