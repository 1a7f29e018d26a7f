"""What the query/retrieve relays share: information models, the request as received, status answers.

The outbound conversations themselves (C-FIND, C-MOVE, C-CANCEL) are ``guard.dicom.conversation``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

#: C-FIND information models the guard relays, with a short name for the audit.
FIND_MODELS: dict[str, str] = {
    str(StudyRootQueryRetrieveInformationModelFind): "study-root",
    str(PatientRootQueryRetrieveInformationModelFind): "patient-root",
}
#: C-MOVE information models, each with the C-FIND model of the same root (to count the matches).
MOVE_MODELS: dict[str, str] = {
    str(StudyRootQueryRetrieveInformationModelMove): str(StudyRootQueryRetrieveInformationModelFind),
    str(PatientRootQueryRetrieveInformationModelMove): str(PatientRootQueryRetrieveInformationModelFind),
}
MODEL_NAMES: dict[str, str] = {
    **FIND_MODELS,
    str(StudyRootQueryRetrieveInformationModelMove): "study-root",
    str(PatientRootQueryRetrieveInformationModelMove): "patient-root",
}
#: The unique keys of the query/retrieve levels (PS3.4 C.6.1.1, C.6.2.1).
UNIQUE_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@dataclass(frozen=True)
class RelayRequest:
    """A C-FIND or C-MOVE request as the guard received it."""

    calling_ae: str
    peer_address: str
    model: str
    identifier: Dataset | None

    @property
    def model_name(self) -> str:
        """``study-root`` or ``patient-root``."""
        return MODEL_NAMES.get(self.model, self.model)

    @property
    def level(self) -> str:
        """The Query/Retrieve Level (0008,0052), upper case, or empty."""
        if self.identifier is None:
            return ""
        return str(self.identifier.get("QueryRetrieveLevel", "") or "").strip().upper()

    def subject(self) -> dict[str, Any]:
        """Audit columns: the patient and study the request names, when it names exactly one."""
        fields: dict[str, Any] = {"actor": self.calling_ae, "peer_address": self.peer_address}
        if self.identifier is None:
            return fields
        for keyword, column in (("PatientID", "patient_id"), ("StudyInstanceUID", "study_uid"), ("SeriesInstanceUID", "series_uid")):
            value = single_value(self.identifier, keyword)
            if value:
                fields[column] = value[:200]
        return fields


def read_request(event: Any) -> RelayRequest:
    """The facts of a C-FIND/C-MOVE event; an identifier that cannot be decoded is None."""
    try:
        identifier: Dataset | None = event.identifier
    except Exception:  # noqa: BLE001 - pynetdicom raises whatever the decoder raised; the answer is 0xA900
        identifier = None
    return RelayRequest(
        calling_ae=str(event.assoc.requestor.ae_title).strip(),
        peer_address=str(event.assoc.requestor.address),
        model=str(event.context.abstract_syntax),
        identifier=identifier,
    )


def single_value(ds: Dataset, keyword: str) -> str:
    """The value of ``keyword`` when it holds exactly one non-empty value, else empty."""
    value = ds.get(keyword)
    if value is None or not isinstance(value, str) or "\\" in value:
        return ""  # absent, or several values (a pydicom MultiValue)
    return value.strip()


def status_dataset(code: int, comment: str = "") -> Dataset:
    """A status for pynetdicom's handler protocol, with an Error Comment (LO: 64 characters)."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def failed_list(uids: list[str]) -> Dataset:
    """The identifier of a final C-MOVE response: Failed SOP Instance UID List (PS3.4 C.4.2.1.4.2)."""
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = uids
    return ds
