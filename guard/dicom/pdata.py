"""P-DATA-TF PDUs built by hand for one C-STORE request: its command set and its data set, fragmented.

A DIMSE message travels as a series of P-DATA-TF PDUs (PS3.8 9.3.5): PDU type 0x04, a reserved
byte, a 4-byte big-endian length, then presentation data value items, each a 4-byte big-endian
length, the presentation context ID and a message control header (PS3.8 E.2: bit 0 set for a
command fragment, clear for data; bit 1 set on the last fragment of either). The command set's
fragments all come before the data set's (PS3.7 6.3.1). Here every PDU carries one PDV item, as
pynetdicom sends them, and its length field (the items, 6 bytes more than the fragment) is at most
the peer's maximum length (PS3.8 D.1: the maximum length of the variable field of the P-DATA-TF
PDUs it receives); 0 means no limit, and fragments are then ``UNLIMITED_FRAGMENT`` bytes.

``read_part10_header`` reads what pynetdicom's ``split_dataset`` reads from a Part 10 file (the
File Meta group's SOP Class, SOP Instance and Transfer Syntax UIDs, and where the data set
starts) without building a data set; ``c_store_rq`` encodes the command set as pynetdicom does
(``tests/unit/test_pdata.py`` compares both); ``DataSetFrames`` reads the data set in fragments
into one buffer and yields each PDU ready to write. Nothing here touches a socket.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from guard.domain.digest import HEADER_LENGTH, NotPart10Error, dataset_offset
from guard.runtime.file_meta import PreparedFileMeta

if TYPE_CHECKING:
    from collections.abc import Iterator

#: PS3.8 9.3.5: PDU type 0x04, reserved, length.
_PDU_HEADER = struct.Struct(">BBL")
#: PS3.8 9.3.5.1: item length, presentation context ID, message control header.
_PDV_HEADER = struct.Struct(">LBB")
#: Bytes in front of each fragment: the PDU header and the PDV item header.
OVERHEAD = _PDU_HEADER.size + _PDV_HEADER.size
#: What the PDU length field counts besides the fragment: the PDV item's length, context ID and control byte.
_PDV_OVERHEAD = _PDV_HEADER.size
#: Fragment size when the peer sets no maximum length (0): large enough to cost little, small enough to keep memory flat.
UNLIMITED_FRAGMENT = 256 * 1024
#: PS3.8 E.2 message control header bits.
COMMAND = 0x01
LAST = 0x02
#: File Meta elements whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_C_STORE_RQ = 0x0001
#: PS3.7 E.1: any value but 0x0101 says a data set follows; pynetdicom writes 0x0001.
_DATA_SET_PRESENT = 0x0001
_ELEMENT = struct.Struct("<HHL")


@dataclass(frozen=True, slots=True)
class Part10Header(PreparedFileMeta):
    """What a C-STORE of a Part 10 file needs from its File Meta group: its three UIDs, and where the data set starts."""

    #: Where the data set starts: the bytes from here to the end are sent as they are.
    dataset_offset: int


def _uid_text(value: bytes) -> str | None:
    """A UI value as pydicom reads it (trailing NUL and spaces dropped); None when it is not plain ASCII."""
    text = value.rstrip(b"\0 ")
    return text.decode("ascii") if text.isascii() and text else None


def read_part10_header(head: bytes) -> Part10Header | None:
    """The File Meta UIDs and the data set offset of the Part 10 file starting with ``head``.

    ``head`` must hold the whole File Meta group (``file_meta_length`` says how much that is).
    None when the group cannot be read here (not Part 10, a UID missing or not ASCII, an element
    that runs past the group): the caller then leaves the file to pynetdicom.
    """
    end = file_meta_length(head)
    values = None if end is None or len(head) < end else _file_meta_elements(head, end)
    if end is None or values is None:
        return None
    sop_class, sop_instance, syntax = (_uid_text(values.get(element, b"")) for element in (0x0002, 0x0003, 0x0010))
    if sop_class is None or sop_instance is None or syntax is None:
        return None
    return Part10Header(sop_class, sop_instance, syntax, end)


#: A File Meta group larger than this is left to pynetdicom (it is never near this size in practice).
MAX_FILE_META = 64 * 1024


def read_file_header(source: BinaryIO) -> Part10Header | None:
    """``read_part10_header`` of the file open at ``source`` (read from its start); None as there, or for a group over ``MAX_FILE_META``."""
    first = source.read(HEADER_LENGTH)
    needed = file_meta_length(first)
    if needed is None or needed > MAX_FILE_META:
        return None
    return read_part10_header(first + source.read(needed - len(first)))


def _file_meta_elements(head: bytes, end: int) -> dict[int, bytes] | None:
    """The values of the File Meta group's elements by element number (Explicit VR Little Endian, PS3.10 7.1); None if malformed."""
    values: dict[int, bytes] = {}
    position = HEADER_LENGTH
    while position < end:
        if position + 8 > end:
            return None
        group, element = struct.unpack_from("<HH", head, position)
        if head[position + 4 : position + 6] in _LONG_VRS:
            (length,) = struct.unpack_from("<L", head, position + 8) if position + 12 <= end else (end,)
            position += 12
        else:
            (length,) = struct.unpack_from("<H", head, position + 6)
            position += 8
        if group != 0x0002 or position + length > end:
            return None
        values[element] = head[position : position + length]
        position += length
    return values


def file_meta_length(first: bytes) -> int | None:
    """How many bytes ``read_part10_header`` needs, from the file's first ``HEADER_LENGTH`` bytes; None if not Part 10."""
    try:
        return dataset_offset(first)
    except NotPart10Error:
        return None


def _padded_uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def c_store_rq(
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    priority: int = 2,
    *,
    originator: tuple[str, int] | None = None,
) -> bytes:
    """The C-STORE-RQ command set (PS3.7 9.3.1.1), Implicit VR Little Endian, with its group length.

    The elements and values pynetdicom writes for ``send_c_store``: Affected SOP Class UID,
    Command Field, Message ID, Priority, Command Data Set Type, Affected SOP Instance UID and,
    for a C-MOVE sub-operation, ``originator``: the Move Originator AE Title and Message ID
    (PS3.7 9.1.1.1.1), in tag order (PS3.5 7.1).
    """
    elements = [
        _encoded(0x0002, _padded_uid(sop_class_uid)),
        _encoded(0x0100, struct.pack("<H", _C_STORE_RQ)),
        _encoded(0x0110, struct.pack("<H", message_id)),
        _encoded(0x0700, struct.pack("<H", priority)),
        _encoded(0x0800, struct.pack("<H", _DATA_SET_PRESENT)),
        _encoded(0x1000, _padded_uid(sop_instance_uid)),
    ]
    if originator is not None:
        ae_title, originator_id = originator
        title = ae_title.encode("ascii")
        elements.append(_encoded(0x1030, title + b" " if len(title) % 2 else title))
        elements.append(_encoded(0x1031, struct.pack("<H", originator_id)))
    body = b"".join(elements)
    return _encoded(0x0000, struct.pack("<L", len(body))) + body


def _encoded(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, element, len(value)) + value


def fragment_size(max_pdu_length: int) -> int:
    """The largest fragment one PDU carries for a peer whose maximum length is ``max_pdu_length`` (0: none)."""
    if max_pdu_length == 0:
        return UNLIMITED_FRAGMENT
    if max_pdu_length <= _PDV_OVERHEAD:
        msg = f"a maximum PDU length of {max_pdu_length} leaves no room for a fragment"
        raise ValueError(msg)
    return max_pdu_length - _PDV_OVERHEAD


def pdu_header(context_id: int, control: int, fragment_length: int) -> bytes:
    """The 12 bytes in front of a fragment: P-DATA-TF header and PDV item header."""
    return _PDU_HEADER.pack(0x04, 0, fragment_length + _PDV_OVERHEAD) + _PDV_HEADER.pack(fragment_length + 2, context_id, control)


def command_pdus(command: bytes, context_id: int, max_pdu_length: int) -> list[bytes]:
    """The PDUs of a command set: every fragment flagged as command, the last one also as last."""
    size = fragment_size(max_pdu_length)
    count = max(1, math.ceil(len(command) / size))
    pdus = []
    for index in range(count):
        fragment = command[index * size : (index + 1) * size]
        control = COMMAND | (LAST if index == count - 1 else 0)
        pdus.append(pdu_header(context_id, control, len(fragment)) + fragment)
    return pdus


class DataSetFrames:
    """The PDUs of a data set read from a file, each built in one reused buffer.

    ``frames`` reads ``length`` bytes from ``source`` (positioned at the data set) in fragments
    of ``fragment_size(max_pdu_length)`` and yields each PDU as a view of the buffer, valid until
    the next one is asked for. An empty data set is one empty last fragment, as pynetdicom sends it.
    A file shorter than ``length`` raises ``EOFError``: the message is then incomplete on the wire.
    """

    def __init__(self, context_id: int, max_pdu_length: int) -> None:
        """Frame for presentation context ``context_id`` within ``max_pdu_length``."""
        self.context_id = context_id
        self.size = fragment_size(max_pdu_length)
        self._buffer = bytearray(OVERHEAD + self.size)

    def frames(self, source: BinaryIO, length: int) -> Iterator[memoryview]:
        """Each PDU of the ``length`` data set bytes at ``source``'s position, in order."""
        view = memoryview(self._buffer)
        left = length
        while True:
            take = min(left, self.size)
            got = _read_exactly(source, view[OVERHEAD : OVERHEAD + take])
            if got < take:
                msg = f"the file ended {left - got} bytes before the end of its data set"
                raise EOFError(msg)
            left -= take
            view[:OVERHEAD] = pdu_header(self.context_id, 0 if left else LAST, take)
            yield view[: OVERHEAD + take]
            if not left:
                return


def _read_exactly(source: BinaryIO, into: memoryview) -> int:
    """Fill ``into`` from ``source``; how many bytes were read (fewer only at the end of the file)."""
    filled = 0
    while filled < len(into):
        count = source.readinto(into[filled:])  # type: ignore[attr-defined]
        if not count:
            break
        filled += count
    return filled
