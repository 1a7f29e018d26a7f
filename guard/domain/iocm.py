"""IHE IOCM rejection notes: a Key Object Selection Document that asks for instances to be removed.

A KOS (1.2.840.10008.5.1.4.1.1.88.59) whose document title (Concept Name Code Sequence) is one
of the rejection codes of scheme DCM is a delete request for the studies it references in the
Current Requested Procedure Evidence Sequence (IHE RAD TF-3 Rad.66 and PS3.16 CID 7011).
"""

from __future__ import annotations

from pydicom import Dataset

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
REJECTION_CODES = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}


def rejection_title(ds: Dataset) -> str | None:
    """The rejection code of a rejection note, or None when ``ds`` is not one."""
    if str(ds.get("SOPClassUID", "")).strip() != KEY_OBJECT_SELECTION:
        return None
    for item in ds.get("ConceptNameCodeSequence", []):
        code = str(item.get("CodeValue", "")).strip()
        scheme = str(item.get("CodingSchemeDesignator", "")).strip()
        if scheme == "DCM" and code in REJECTION_CODES:
            return code
    return None


def referenced_studies(ds: Dataset) -> list[str]:
    """Study Instance UIDs referenced by the note's evidence, in order, without repeats."""
    studies: list[str] = []
    for item in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        uid = str(item.get("StudyInstanceUID", "")).strip()
        if uid not in studies:
            studies.append(uid)
    return studies
