"""A structural check of a received Part 10 file before the guard accepts it (PS3.5 7, PS3.10 7).

The guard does not interpret pixel data, but it must not acknowledge, store and forward a data
set that is not well formed: a truncated object, an element whose length runs past the end,
bytes in another encoding than the negotiated transfer syntax says, an unknown VR, or
sequences nested deeper than any real object needs. ``find_problem`` walks the elements
without reading their values (a value is skipped by its length, so memory stays flat for any
size) and without recursion, and says what is wrong, or None.

Deflated transfer syntaxes are compressed streams and are not walked (None).

``inspect`` does the same walk and also keeps the raw bytes of a few top-level elements the
caller names (the UIDs, Patient ID and Modality the guard records), so that a received file is
read once instead of walked here and parsed again by pydicom. A value longer than
``MAX_KEPT_VALUE`` is not kept (no UID or identifier the guard records is that long; the caller
then reads the file with pydicom, which decides as it always has).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

#: Deepest nesting of sequences accepted; real objects (SR trees included) stay far below.
MAX_DEPTH = 64
#: Longest top-level value ``inspect`` keeps.
MAX_KEPT_VALUE = 1024

IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"
_DEFLATED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"}
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_VRS = _LONG_VRS | {
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US",
}  # fmt: skip
_ITEM, _ITEM_END, _SEQUENCE_END = 0xE000, 0xE00D, 0xE0DD


@dataclass
class _Scope:
    """An open sequence or item: where it ends (None: undefined length, ends at its delimiter)."""

    end: int | None
    is_sequence: bool
    fragments: bool = False  # encapsulated pixel data: its items are opaque fragments (PS3.5 A.4)
    implicit: bool = False  # UN of undefined length: its content is Implicit VR Little Endian (PS3.5 6.2.2)


@dataclass(frozen=True, slots=True)
class KeptValue:
    """A top-level element's value as it is in the file: its VR (None under Implicit VR), bytes and offset."""

    vr: str | None
    value: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class Inspection:
    """What ``inspect`` found: the structural problem (None: well formed), and the kept values by tag.

    ``complete`` is False when a wanted element was present but too long to keep (or the data set
    is deflated and was not walked): ``values`` then does not stand for the file's header.
    """

    problem: str | None
    values: dict[int, KeptValue]
    complete: bool


class _Malformed(Exception):  # noqa: N818 - internal signal, turned into the returned problem
    """What is wrong, at which offset."""


def find_problem(path: Path, transfer_syntax: str) -> str | None:
    """What is structurally wrong with the data set in Part 10 file ``path``, or None when it is well formed."""
    return inspect(path, transfer_syntax).problem


def inspect(path: Path, transfer_syntax: str, wanted: frozenset[int] = frozenset()) -> Inspection:
    """Walk the data set in Part 10 file ``path``; keep the values of the ``wanted`` top-level tags (``group << 16 | element``)."""
    if transfer_syntax in _DEFLATED:
        return Inspection(None, {}, complete=False)
    kept = _Kept(wanted)
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            start = _data_set_start(fh, size)
            _walk(fh, start, size, implicit=transfer_syntax == IMPLICIT_LITTLE, big=transfer_syntax == EXPLICIT_BIG, kept=kept)
    except _Malformed as exc:
        return Inspection(str(exc), {}, complete=False)
    except OSError as exc:
        return Inspection(f"cannot read the data set: {exc}", {}, complete=False)
    return Inspection(None, kept.values, complete=kept.complete)


class _Kept:
    """The wanted top-level values met so far."""

    def __init__(self, wanted: frozenset[int]) -> None:
        self.wanted = wanted
        self.values: dict[int, KeptValue] = {}
        self.complete = True

    def offer(self, fh: BinaryIO, tag: tuple[int, int], vr: str | None, length: int, pos: int) -> None:
        """Keep the element at ``pos`` if it is wanted (the walk has checked that its value fits)."""
        key = tag[0] << 16 | tag[1]
        if key not in self.wanted:
            return
        if length > MAX_KEPT_VALUE:
            self.complete = False
            return
        fh.seek(pos)
        self.values[key] = KeptValue(vr, fh.read(length), pos)


def _read(fh: BinaryIO, offset: int, count: int, size: int) -> bytes:
    if offset + count > size:
        msg = f"truncated at byte {offset}: {count} bytes needed, {size - offset} left"
        raise _Malformed(msg)
    fh.seek(offset)
    return fh.read(count)


def _data_set_start(fh: BinaryIO, size: int) -> int:
    """After the preamble, ``DICM`` and the File Meta group (its group length, PS3.10 7.1)."""
    if _read(fh, 128, 4, size) != b"DICM":
        msg = "not a Part 10 file (no DICM prefix)"
        raise _Malformed(msg)
    group, element, vr, length = struct.unpack("<HH2sH", _read(fh, 132, 8, size))
    if (group, element, vr, length) != (2, 0, b"UL", 4):
        msg = "file meta information has no group length"
        raise _Malformed(msg)
    (meta_length,) = struct.unpack("<L", _read(fh, 140, 4, size))
    return 144 + int(meta_length)


def _walk(fh: BinaryIO, pos: int, size: int, *, implicit: bool, big: bool, kept: _Kept) -> None:
    """Visit every element header, skipping values; raise ``_Malformed`` at the first problem."""
    order = ">" if big else "<"
    scopes: list[_Scope] = []
    while True:
        while scopes and scopes[-1].end is not None and pos == scopes[-1].end:
            scopes.pop()
        if pos == size:
            break
        limit = next((s.end for s in reversed(scopes) if s.end is not None), size)
        group, element = struct.unpack(f"{order}HH", _read(fh, pos, 4, size))
        if group == 0xFFFE:
            pos = _delimiter(fh, pos, size, element, scopes, limit, order)
            continue
        if scopes and scopes[-1].is_sequence:
            msg = f"element ({group:04X},{element:04X}) at byte {pos} inside a sequence but outside an item"
            raise _Malformed(msg)
        inside_un = any(scope.implicit for scope in scopes)
        vr, length, pos = _element_header(fh, pos, size, implicit=implicit or inside_un, order="<" if inside_un else order)
        top_level = not scopes
        pos_value = pos
        pos = _value(scopes, (group, element), vr, length, pos, limit)
        if top_level and kept.wanted and length != _UNDEFINED and vr != "SQ":
            kept.offer(fh, (group, element), vr, length, pos_value)
    if scopes:
        msg = f"{len(scopes)} sequence(s) or item(s) never closed"
        raise _Malformed(msg)


def _value(scopes: list[_Scope], tag: tuple[int, int], vr: str | None, length: int, pos: int, limit: int) -> int:
    """Open a sequence, or skip a value; the offset of what follows."""
    if length == _UNDEFINED:
        if vr not in {"SQ", "UN", "OB", "OW", None}:
            msg = f"undefined length on VR {vr} at byte {pos}"
            raise _Malformed(msg)
        _push(scopes, _Scope(None, is_sequence=True, fragments=vr in {"OB", "OW"}, implicit=vr == "UN"), pos)
        return pos
    if pos + length > limit:
        msg = f"element ({tag[0]:04X},{tag[1]:04X}) at byte {pos} claims {length} bytes, {limit - pos} are left"
        raise _Malformed(msg)
    if vr == "SQ":
        _push(scopes, _Scope(pos + length, is_sequence=True), pos)
        return pos
    return pos + length


def _push(scopes: list[_Scope], scope: _Scope, pos: int) -> None:
    scopes.append(scope)
    if len(scopes) > 2 * MAX_DEPTH:  # each level is a sequence and an item
        msg = f"sequences nested deeper than {MAX_DEPTH} at byte {pos}"
        raise _Malformed(msg)


def _element_header(fh: BinaryIO, pos: int, size: int, *, implicit: bool, order: str) -> tuple[str | None, int, int]:
    """The VR (None when implicit), value length and value offset of the element at ``pos``."""
    if implicit:
        (length,) = struct.unpack(f"{order}L", _read(fh, pos + 4, 4, size))
        return None, int(length), pos + 8
    raw_vr = _read(fh, pos + 4, 2, size)
    vr = raw_vr.decode("ascii", "replace")
    if vr not in _VRS:
        msg = f"invalid VR {raw_vr!r} at byte {pos}: not Explicit VR as the transfer syntax says, or corrupt"
        raise _Malformed(msg)
    if vr in _LONG_VRS:
        (length,) = struct.unpack(f"{order}L", _read(fh, pos + 8, 4, size))
        return vr, int(length), pos + 12
    (length,) = struct.unpack(f"{order}H", _read(fh, pos + 6, 2, size))
    return vr, int(length), pos + 8


def _delimiter(fh: BinaryIO, pos: int, size: int, element: int, scopes: list[_Scope], limit: int, order: str) -> int:
    """An item or a delimiter (PS3.5 7.5); the offset after it."""
    length = int(struct.unpack(f"{order}L", _read(fh, pos + 4, 4, size))[0])
    pos += 8
    if element == _ITEM and scopes and scopes[-1].fragments:
        if length == _UNDEFINED or pos + length > limit:
            msg = f"pixel data fragment at byte {pos} has a bad length {length}"
            raise _Malformed(msg)
        return pos + length
    if element == _ITEM and scopes and scopes[-1].is_sequence:
        if length == _UNDEFINED:
            _push(scopes, _Scope(None, is_sequence=False), pos)
            return pos
        if pos + length > limit:
            msg = f"item at byte {pos} claims {length} bytes, {limit - pos} are left"
            raise _Malformed(msg)
        _push(scopes, _Scope(pos + length, is_sequence=False), pos)
        return pos
    if element == _ITEM_END and scopes and not scopes[-1].is_sequence and scopes[-1].end is None:
        scopes.pop()
        return pos
    if element == _SEQUENCE_END and scopes and scopes[-1].is_sequence and scopes[-1].end is None:
        scopes.pop()
        return pos
    msg = f"unexpected delimiter (FFFE,{element:04X}) at byte {pos - 8}"
    raise _Malformed(msg)
