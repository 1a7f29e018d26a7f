"""C-FIND answers from the ledger, for when the archive cannot be reached (``query.ledger_fallback``).

The ledger knows what the guard has received: patient, study, series and SOP Instance UIDs,
SOP class, modality. Matching is on those keys (single values, lists, and ``*``/``?``
wildcards); every other requested key is returned empty (zero length), which PS3.4 C.2.2.1.3
allows for keys the SCP does not support. Rows stream from the database in key order and are
grouped on the fly, so a large answer is never held in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydicom import Dataset
from sqlalchemy import ColumnElement, and_, or_, select

from guard.ledger.instances import newest_versions
from guard.ledger.ledger import Ledger
from guard.ledger.schema import instances, series

#: The column of each matching key, and the level whose identity it is.
_COLUMNS = {
    "PatientID": instances.c.patient_id,
    "StudyInstanceUID": instances.c.study_uid,
    "SeriesInstanceUID": instances.c.series_uid,
    "SOPInstanceUID": instances.c.sop_instance_uid,
}
_LEVEL_KEYS = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


def values_of(ds: Dataset, keyword: str) -> list[str]:
    """Every non-empty value of a (possibly multi-valued) matching key."""
    value = ds.get(keyword)
    if value is None:
        return []
    # A multi-valued element is a pydicom MultiValue (a sequence, not a list); a single one a str.
    items = str(value).split("\\") if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) else list(value)
    return [str(v).strip() for v in items if str(v).strip()]


def _matcher(keyword: str, values: list[str]) -> ColumnElement[bool]:
    column = _COLUMNS[keyword]
    clauses: list[ColumnElement[bool]] = []
    for value in values:
        if "*" in value or "?" in value:
            clauses.append(column.like(value.replace("%", r"\%").replace("_", r"\_").replace("*", "%").replace("?", "_"), escape="\\"))
        else:
            clauses.append(column == value)
    return or_(*clauses)


def answer_from_ledger(ledger: Ledger, query: Dataset, *, retrieve_ae: str) -> Iterator[Dataset]:
    """Yield one identifier per matching patient, study, series or instance of the ledger."""
    level = str(query.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in _LEVEL_KEYS:
        return
    conditions = [_matcher(k, values_of(query, k)) for k in _COLUMNS if values_of(query, k)]
    joined = newest_versions(and_(*conditions) if conditions else instances.c.id.isnot(None)).outerjoin(
        series, series.c.series_uid == instances.c.series_uid
    )
    order = [instances.c.patient_id, instances.c.study_uid, instances.c.series_uid, instances.c.sop_instance_uid]
    depth = list(_LEVEL_KEYS).index(level) + 1
    statement = (
        select(*order, instances.c.sop_class_uid, series.c.modality)
        .select_from(joined)
        .order_by(*order[:depth])
        .execution_options(yield_per=500)
    )
    group: list[Any] = []
    with ledger.read() as conn:
        for row in conn.execute(statement):
            if group and tuple(group[0][:depth]) != tuple(row[:depth]):
                yield _identifier(query, level, group, retrieve_ae)
                group = []
            group.append(row)
    if group:
        yield _identifier(query, level, group, retrieve_ae)


def _identifier(query: Dataset, level: str, rows: list[Any], retrieve_ae: str) -> Dataset:
    """The answer for one group of rows: the requested keys, filled where the ledger knows them."""
    first = rows[0]
    known: dict[str, Any] = {
        "PatientID": first.patient_id or "",
        "StudyInstanceUID": first.study_uid,
        "SeriesInstanceUID": first.series_uid,
        "SOPInstanceUID": first.sop_instance_uid,
        "SOPClassUID": first.sop_class_uid,
        "Modality": first.modality or "",
        "ModalitiesInStudy": sorted({r.modality for r in rows if r.modality}),
        "NumberOfStudyRelatedInstances": len(rows),
        "NumberOfSeriesRelatedInstances": len(rows),
        "NumberOfPatientRelatedInstances": len(rows),
    }
    depth = list(_LEVEL_KEYS).index(level) + 1
    identity = set(list(_LEVEL_KEYS.values())[:depth])
    answer = Dataset()
    for element in query:
        keyword = element.keyword
        if not keyword or element.VR == "SQ" or keyword in {"QueryRetrieveLevel", "SpecificCharacterSet"}:
            continue
        in_scope = keyword in identity or keyword not in _COLUMNS
        setattr(answer, keyword, known.get(keyword, "") if in_scope else "")
    answer.QueryRetrieveLevel = level
    answer.RetrieveAETitle = retrieve_ae
    return answer
