"""The few top-level elements of a received data set the guard records, as a pydicom data set.

The ingest path needs the SOP Class and Instance UIDs, the Study and Series Instance UIDs,
Patient ID and Modality of each instance (and Specific Character Set to decode Patient ID). The
structural check (``guard.domain.structure.inspect``) already walks every element of the file,
so it keeps the raw bytes of these; ``from_inspection`` wraps them in a ``Dataset`` of raw
elements, decoded by pydicom on access exactly as if ``dcmread`` had read the file (same value
conversion, same character set handling). ``None`` when the walk could not keep them all, or
for a Key Object Selection (whose rejection-note check reads its sequences): the caller then
reads the file with ``dcmread``.
"""

from __future__ import annotations

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from guard.domain.iocm import KEY_OBJECT_SELECTION
from guard.domain.structure import EXPLICIT_BIG, IMPLICIT_LITTLE, Inspection

_SPECIFIC_CHARACTER_SET = 0x00080005
_SOP_CLASS_UID = 0x00080016

#: What the ingest path reads from a received data set (PS3.3 C.12.1, C.7.1.1, C.7.2.1, C.7.3.1).
RECORDED_TAGS = frozenset(
    {
        _SPECIFIC_CHARACTER_SET,
        _SOP_CLASS_UID,
        0x00080018,  # SOP Instance UID
        0x00080060,  # Modality
        0x00100020,  # Patient ID
        0x0020000D,  # Study Instance UID
        0x0020000E,  # Series Instance UID
    }
)


def from_inspection(inspection: Inspection, transfer_syntax: str) -> Dataset | None:
    """The recorded elements as a data set of raw elements, or None when the file must be read whole."""
    if inspection.problem is not None or not inspection.complete:
        return None
    sop_class = inspection.values.get(_SOP_CLASS_UID)
    if sop_class is not None and KEY_OBJECT_SELECTION.encode() in sop_class.value:
        return None
    implicit, little = transfer_syntax == IMPLICIT_LITTLE, transfer_syntax != EXPLICIT_BIG
    raw = {
        BaseTag(key): RawDataElement(BaseTag(key), kept.vr, len(kept.value), kept.value, kept.offset, implicit, little)
        for key, kept in sorted(inspection.values.items())
    }
    header = Dataset(raw, parent_encoding=default_encoding)  # type: ignore[arg-type]
    encoding: str | list[str] = default_encoding
    if _SPECIFIC_CHARACTER_SET in raw:
        encoding = convert_encodings(convert_raw_data_element(raw[BaseTag(_SPECIFIC_CHARACTER_SET)]).value)
    header.set_original_encoding(implicit, little, encoding)
    return header
