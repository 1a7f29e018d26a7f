"""The reference archive's in-memory index, and C-FIND matching over it (PS3.4 C.2.2 and C.6).

Each held instance is indexed by a few header attributes (``INDEXED``), read once when it is
stored or when the archive starts, so that a query does not read every file. Matching:

- Unique keys (Study, Series, SOP Instance UID) do single-value or list-of-UID matching
  (PS3.4 C.2.2.2.2): a backslash-separated list matches any of its UIDs.
- Other indexed attributes do single-value matching, with ``*`` and ``?`` wildcards, and
  range matching (``lo-hi``, either end open) for dates and times.
- An empty key is a return key (universal matching). A value given for an attribute that
  is not indexed is not matched against; the stored value is returned.

There is one response per distinct value of the level's unique key (PatientID at PATIENT
level). Return keys come from the index, the ``Number of ... Related ...`` and
``ModalitiesInStudy`` attributes are counted, and any other return key is read from the
header of one matching file.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from guard.domain.uids import is_valid_uid

INDEXED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
)
LEVEL_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
_UNIQUE_UIDS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"}
_NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet", "QueryRetrieveView", "TimezoneOffsetFromUTC"}
_RANGE_VRS = {"DA", "TM", "DT"}


@dataclass(frozen=True)
class Entry:
    """One held instance: its file and its indexed attributes as text (several values joined by a backslash)."""

    path: Path
    values: dict[str, str]

    def get(self, keyword: str) -> str:
        """The attribute's text, empty when the file lacks it."""
        return self.values.get(keyword, "")


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_text(v) for v in value)
    return str(value)


def _distinct(keyword: str) -> Callable[[list[Entry]], str]:
    return lambda group: str(len({e.get(keyword) for e in group}))


_COMPUTED: dict[str, Callable[[list[Entry]], str]] = {
    "NumberOfPatientRelatedStudies": _distinct("StudyInstanceUID"),
    "NumberOfPatientRelatedSeries": _distinct("SeriesInstanceUID"),
    "NumberOfPatientRelatedInstances": lambda group: str(len(group)),
    "NumberOfStudyRelatedSeries": _distinct("SeriesInstanceUID"),
    "NumberOfStudyRelatedInstances": lambda group: str(len(group)),
    "NumberOfSeriesRelatedInstances": lambda group: str(len(group)),
    "ModalitiesInStudy": lambda group: "\\".join(sorted({e.get("Modality") for e in group} - {""})),
    "SOPClassesInStudy": lambda group: "\\".join(sorted({e.get("SOPClassUID") for e in group} - {""})),
}


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def _matches(keyword: str, stored: str, wanted: list[str]) -> bool:
    """Whether ``stored`` matches any of the ``wanted`` values of attribute ``keyword``."""
    for value in wanted:
        if keyword in _UNIQUE_UIDS or ("*" not in value and "?" not in value and "-" not in value):
            if stored == value:
                return True
        elif "-" in value and dictionary_VR(keyword) in _RANGE_VRS:
            low, _, high = value.partition("-")
            if stored and (not low or stored >= low) and (not high or stored[: len(high)] <= high):
                return True
        elif _wildcard(value).fullmatch(stored):
            return True
    return False


class Index:
    """SOP Instance UID to ``Entry``, safe to use from several association threads."""

    def __init__(self) -> None:
        """Start empty."""
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many instances are indexed."""
        return len(self._entries)

    def rebuild(self, directory: Path) -> int:
        """Index every ``<SOP Instance UID>.dcm`` in ``directory``; return how many were readable."""
        entries = {}
        for path in sorted(directory.glob("*.dcm")):
            entry = _read_entry(path)
            if entry is not None:
                entries[path.stem] = entry
        with self._lock:
            self._entries = entries
        return len(entries)

    def add(self, path: Path) -> bool:
        """Index (or re-index) the file at ``path``; False when its header cannot be read."""
        entry = _read_entry(path)
        if entry is not None:
            with self._lock:
                self._entries[path.stem] = entry
        return entry is not None

    def remove(self, sop_instance_uid: str) -> None:
        """Forget an instance (no error when it is not indexed)."""
        with self._lock:
            self._entries.pop(sop_instance_uid, None)

    def sop_class(self, sop_instance_uid: str) -> str | None:
        """The indexed SOP Class UID of an instance, or None when not indexed."""
        with self._lock:
            entry = self._entries.get(sop_instance_uid)
        return entry.get("SOPClassUID") if entry is not None else None

    def search(self, query: Dataset, level: str) -> Iterator[Dataset]:
        """Yield one response identifier per match of ``query`` at ``level`` (a key of ``LEVEL_KEYS``)."""
        unique = LEVEL_KEYS[level]
        criteria: dict[str, list[str]] = {}
        requested: list[str] = []
        for element in query:
            keyword = element.keyword
            if not keyword or keyword in _NOT_KEYS:
                continue
            requested.append(keyword)
            if keyword in INDEXED and element.value not in (None, "", b""):
                values = element.value if isinstance(element.value, MultiValue | list) else [element.value]
                criteria[keyword] = [_text(v) for v in values]
        if unique not in requested:
            requested.append(unique)
        with self._lock:
            entries = list(self._entries.values())
        groups: dict[str, list[Entry]] = {}
        for entry in entries:
            if all(_matches(k, entry.get(k), wanted) for k, wanted in criteria.items()):
                groups.setdefault(entry.get(unique), []).append(entry)
        for group in groups.values():
            yield _identifier(group, level, requested)


def _identifier(group: list[Entry], level: str, requested: list[str]) -> Dataset:
    first = group[0]
    ds = Dataset()
    if first.get("SpecificCharacterSet"):
        ds.SpecificCharacterSet = first.get("SpecificCharacterSet")
    ds.QueryRetrieveLevel = level
    header: Dataset | None = None
    for keyword in requested:
        if keyword in INDEXED:
            setattr(ds, keyword, first.get(keyword))
        elif keyword in _COMPUTED:
            setattr(ds, keyword, _COMPUTED[keyword](group))
        else:
            if header is None:
                header = _read_header(first.path) or Dataset()
            setattr(ds, keyword, header[keyword].value if keyword in header else None)
    return ds


def _read_header(path: Path, keywords: tuple[str, ...] | None = None) -> Dataset | None:
    try:
        return dcmread(path, stop_before_pixels=True, specific_tags=list(keywords) if keywords else None)
    except (OSError, InvalidDicomError, ValueError, KeyError, TypeError):
        return None


def _read_entry(path: Path) -> Entry | None:
    if not is_valid_uid(path.stem):
        return None
    header = _read_header(path, INDEXED)
    if header is None:
        return None
    return Entry(path=path, values={k: _text(header.get(k)) for k in INDEXED if k in header})
