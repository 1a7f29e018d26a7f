"""What the query/retrieve relays share: information models, the request as received, outbound C-FIND.

Every pynetdicom outcome of an outbound C-FIND is translated here into identifiers or a
``PeerError`` (``TransientPeerError`` when the association could not be made or was lost).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from guard.dicom.net import Peer, open_association
from guard.domain import status as st
from guard.domain.errors import PeerError, TransientPeerError

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
PENDING_STATUSES = frozenset({st.PENDING, st.PENDING_WARNING})
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


def relay_ae(own_ae: str, timeout: float, *contexts: str) -> AE:
    """An AE for one outbound relay association, proposing ``contexts``."""
    ae = AE(ae_title=own_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    for context in contexts:
        ae.add_requested_context(context)
    return ae


def find_all(own_ae: str, peer: Peer, query: Dataset, model: str, *, timeout: float) -> Iterator[Dataset]:
    """C-FIND ``peer`` and yield each matching identifier as it arrives.

    Raises ``TransientPeerError`` when the peer cannot be reached or the association is lost,
    ``PeerError`` (with the status) when the peer answers a failure.
    """
    assoc = open_association(relay_ae(own_ae, timeout, model), peer, [])
    try:
        for status, identifier in assoc.send_c_find(query, model):
            if status is None or "Status" not in status:
                msg = f"C-FIND to {peer.ae_title}: no response (association lost or timed out)"
                raise TransientPeerError(msg)
            code = int(status.Status)
            if code in PENDING_STATUSES:
                if identifier is not None:
                    yield identifier
                continue
            if code != st.SUCCESS:
                msg = f"{peer.ae_title} answered the C-FIND with 0x{code:04X}"
                raise PeerError(msg, status=code)
    finally:
        if assoc.is_established:
            assoc.release()
