"""Audit records as DICOM audit messages (PS3.15 Annex A.5, the IHE ATNA format).

``to_message`` turns one ledger audit record (an ``AuditEntry`` of ``guard.ledger.audit_query``) into
the XML of a DICOM audit message, or None when the record has no counterpart in the standard's
catalogue (for example ``instance.confirmed``). The mapping:

==========================  ===============================================  ============
guard event                 DICOM audit message (EventID)                    action code
==========================  ===============================================  ============
service.started / stopped   Application Activity (110100), Start/Stop         E
instance.received           DICOM Instances Transferred (110104)              C
instance.forwarded          DICOM Instances Transferred (110104)              R
commitment.reported         DICOM Instances Transferred (110104)              R
query.relayed               Query (110112)                                    E
move.relayed, pull          Begin Transferring DICOM Instances (110102)       E
delete.permitted (done)     DICOM Study Deleted (110105)                      D
delete.refused              DICOM Study Deleted (110105), outcome 4           D
security.alert              Security Alert (110113)                           E
association.rejected        Security Alert (110113), Node Authentication      E
==========================  ===============================================  ============

The guard's own sequence number and hash of the record travel in a ``ParticipantObjectDetail``
of type ``guard-audit-seq`` / ``guard-audit-hash`` so that a collector's copy can be matched to
the ledger's chain.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

from guard.ledger.audit_query import AuditEntry

# EventOutcomeIndicator (PS3.15 A.5.1)
SUCCESS = "0"
MINOR_FAILURE = "4"
SERIOUS_FAILURE = "8"


@dataclass(frozen=True)
class Code:
    """A coded value (CodedValueType): code, coding scheme and its meaning."""

    code: str
    scheme: str
    meaning: str


def dcm(code: str, meaning: str) -> Code:
    """A code of the DICOM Controlled Terminology (``DCM``)."""
    return Code(code, "DCM", meaning)


# EventID
APPLICATION_ACTIVITY = dcm("110100", "Application Activity")
BEGIN_TRANSFERRING = dcm("110102", "Begin Transferring DICOM Instances")
INSTANCES_TRANSFERRED = dcm("110104", "DICOM Instances Transferred")
STUDY_DELETED = dcm("110105", "DICOM Study Deleted")
QUERY = dcm("110112", "Query")
SECURITY_ALERT = dcm("110113", "Security Alert")
# EventTypeCode
APPLICATION_START = dcm("110120", "Application Start")
APPLICATION_STOP = dcm("110121", "Application Stop")
NODE_AUTHENTICATION = dcm("110126", "Node Authentication")
SECURITY_CONFIGURATION = dcm("110129", "Security Configuration")
USE_OF_RESTRICTED_FUNCTION = dcm("110132", "Use of Restricted Function")
OBJECT_SECURITY_ATTRIBUTES_CHANGED = dcm("110135", "Object Security Attributes Changed")
# RoleIDCode
APPLICATION = dcm("110150", "Application")
DESTINATION = dcm("110152", "Destination Role ID")
SOURCE = dcm("110153", "Source Role ID")
# ParticipantObjectIDTypeCode
STUDY_INSTANCE_UID = dcm("110180", "Study Instance UID")
SOP_CLASS_UID = dcm("110181", "SOP Class UID")
NODE_ID = dcm("110182", "Node ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
# AuditSourceTypeCode 4: application server process tier
AUDIT_SOURCE_APPLICATION_SERVER = Code("4", "DCM", "Application Server")

# ParticipantObjectTypeCode / ParticipantObjectTypeCodeRole (RFC 3881)
TYPE_PERSON, TYPE_SYSTEM_OBJECT = "1", "2"
ROLE_PATIENT, ROLE_REPORT, ROLE_SECURITY_RESOURCE = "1", "3", "13"

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


@dataclass(frozen=True)
class Node:
    """Who the guard is in its audit messages."""

    ae_title: str
    host: str
    site_id: str = ""


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant: a user or process, whether it asked, from where, in which role."""

    user_id: str
    requestor: bool
    role: Code | None = None
    address: str | None = None
    ae_title: str | None = None


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.scheme, "originalText": code.meaning})


def _network_type(address: str) -> str:
    """NetworkAccessPointTypeCode: 2 for an IP address, 1 for a machine name."""
    return "2" if address.replace(".", "").isdigit() or ":" in address else "1"


class _Message:
    """Builds one AuditMessage element by element, in the order of the standard's schema."""

    def __init__(self, event: Code, action: str, at: str, outcome: str, *, types: tuple[Code, ...] = (), note: str = "") -> None:
        self.root = ET.Element("AuditMessage")
        ident = ET.SubElement(
            self.root, "EventIdentification", {"EventActionCode": action, "EventDateTime": at, "EventOutcomeIndicator": outcome}
        )
        _coded(ident, "EventID", event)
        for code in types:
            _coded(ident, "EventTypeCode", code)
        if note:
            ET.SubElement(ident, "EventOutcomeDescription").text = note

    def participant(self, who: Participant) -> None:
        attrs = {"UserID": who.user_id, "UserIsRequestor": "true" if who.requestor else "false"}
        if who.ae_title:
            attrs["AlternativeUserID"] = f"AETITLES={who.ae_title}"
        if who.address:
            attrs["NetworkAccessPointID"] = who.address
            attrs["NetworkAccessPointTypeCode"] = _network_type(who.address)
        element = ET.SubElement(self.root, "ActiveParticipant", attrs)
        if who.role is not None:
            _coded(element, "RoleIDCode", who.role)

    def source(self, node: Node) -> None:
        attrs = {"AuditSourceID": node.ae_title}
        if node.site_id:
            attrs["AuditEnterpriseSiteID"] = node.site_id
        element = ET.SubElement(self.root, "AuditSourceIdentification", attrs)
        _coded(element, "AuditSourceTypeCode", AUDIT_SOURCE_APPLICATION_SERVER)

    def participant_object(  # noqa: PLR0913 - the optional parts of the standard, by keyword
        self,
        object_id: str,
        type_code: str,
        role: str,
        id_type: Code,
        *,
        name: str | None = None,
        query: bytes | None = None,
        details: dict[str, str] | None = None,
        description: str | None = None,
        sop_classes: dict[str, int] | None = None,
    ) -> None:
        element = ET.SubElement(
            self.root,
            "ParticipantObjectIdentification",
            {"ParticipantObjectID": object_id, "ParticipantObjectTypeCode": type_code, "ParticipantObjectTypeCodeRole": role},
        )
        _coded(element, "ParticipantObjectIDTypeCode", id_type)
        if name is not None:
            ET.SubElement(element, "ParticipantObjectName").text = name
        elif query is not None:
            ET.SubElement(element, "ParticipantObjectQuery").text = base64.b64encode(query).decode("ascii")
        for key, value in (details or {}).items():
            ET.SubElement(element, "ParticipantObjectDetail", {"type": key, "value": base64.b64encode(value.encode()).decode("ascii")})
        if description:
            ET.SubElement(element, "ParticipantObjectDescription").text = description
        for uid, count in (sop_classes or {}).items():
            ET.SubElement(element, "SOPClass", {"UID": uid, "NumberOfInstances": str(count)})

    def xml(self) -> str:
        return ET.tostring(self.root, encoding="unicode")


def _guard(node: Node, *, requestor: bool, role: Code | None) -> Participant:
    return Participant(user_id=node.ae_title, requestor=requestor, role=role, address=node.host, ae_title=node.ae_title)


def _peer(record: AuditEntry, *, requestor: bool, role: Code | None, fallback: str = "unknown") -> Participant:
    actor = record.actor or fallback
    return Participant(user_id=actor, requestor=requestor, role=role, address=record.peer_address, ae_title=actor)


def _chain_details(record: AuditEntry) -> dict[str, str]:
    return {"guard-audit-seq": str(record.seq), "guard-audit-hash": str(record.hash or "")}


def _study_and_patient(msg: _Message, record: AuditEntry, *, sop_classes: dict[str, int] | None = None) -> None:
    study = record.study_uid
    if study:
        msg.participant_object(
            study, TYPE_SYSTEM_OBJECT, ROLE_REPORT, STUDY_INSTANCE_UID, details=_chain_details(record), sop_classes=sop_classes
        )
    patient = record.patient_id
    if patient:
        msg.participant_object(patient, TYPE_PERSON, ROLE_PATIENT, PATIENT_NUMBER)


def _outcome(record: AuditEntry) -> str:
    return SUCCESS if record.outcome == "success" else MINOR_FAILURE if record.outcome == "refused" else SERIOUS_FAILURE


def _sop_classes(record: AuditEntry) -> dict[str, int] | None:
    sop_class = record.detail.get("sop_class_uid")
    return {sop_class: 1} if sop_class else None


def _application_activity(record: AuditEntry, node: Node) -> _Message:
    start = record.event == "service.started"
    msg = _Message(APPLICATION_ACTIVITY, "E", record.at, _outcome(record), types=(APPLICATION_START if start else APPLICATION_STOP,))
    msg.participant(_guard(node, requestor=False, role=APPLICATION))
    msg.source(node)
    return msg


def _transferred(record: AuditEntry, node: Node) -> _Message:
    """Instances the guard received (C), forwarded (R), or a commitment report naming them (R)."""
    event = record.event
    action = "C" if event == "instance.received" else "R"
    detail = record.detail
    msg = _Message(INSTANCES_TRANSFERRED, action, record.at, _outcome(record), note=str(detail.get("reason") or ""))
    if event == "instance.received" or (event == "commitment.reported" and detail.get("direction") == "inbound"):
        msg.participant(_peer(record, requestor=True, role=SOURCE))
        msg.participant(_guard(node, requestor=False, role=DESTINATION))
    else:
        msg.participant(_guard(node, requestor=True, role=SOURCE))
        msg.participant(_peer(record, requestor=False, role=DESTINATION))
    msg.source(node)
    _study_and_patient(msg, record, sop_classes=_sop_classes(record))
    return msg


def _query(record: AuditEntry, node: Node) -> _Message:
    detail = record.detail
    msg = _Message(QUERY, "E", record.at, _outcome(record))
    msg.participant(_peer(record, requestor=True, role=SOURCE))
    msg.participant(_guard(node, requestor=False, role=DESTINATION))
    msg.source(node)
    sop_class = str(detail.get("sop_class_uid") or STUDY_ROOT_FIND)
    query = str(detail.get("query") or detail.get("identifier") or "").encode("utf-8")
    details = {"TransferSyntax": "1.2.840.10008.1.2", **_chain_details(record)}
    msg.participant_object(sop_class, TYPE_SYSTEM_OBJECT, ROLE_REPORT, SOP_CLASS_UID, query=query, details=details)
    return msg


def _begin_transferring(record: AuditEntry, node: Node) -> _Message:
    detail = record.detail
    msg = _Message(BEGIN_TRANSFERRING, "E", record.at, _outcome(record))
    msg.participant(_peer(record, requestor=True, role=SOURCE))
    destination = str(detail.get("destination") or node.ae_title)
    msg.participant(Participant(user_id=destination, requestor=False, role=DESTINATION, ae_title=destination))
    msg.participant(_guard(node, requestor=False, role=None))
    msg.source(node)
    _study_and_patient(msg, record)
    return msg


def _study_deleted(record: AuditEntry, node: Node) -> _Message | None:
    detail = record.detail
    if record.event == "delete.permitted" and detail.get("backend") in {None, "decision-only"} and record.outcome == "success":
        return None  # permitted but not carried out by the guard: nothing was deleted here
    note = "; ".join(detail.get("reasons") or []) or str(detail.get("backend_error") or "")
    msg = _Message(STUDY_DELETED, "D", record.at, _outcome(record), note=note)
    msg.participant(_peer(record, requestor=True, role=None, fallback="unknown-requester"))
    msg.participant(_guard(node, requestor=False, role=APPLICATION))
    msg.source(node)
    _study_and_patient(msg, record)
    return msg


_ALERT_TYPES = {
    "bad-token": USE_OF_RESTRICTED_FUNCTION,
    "rate-limited": USE_OF_RESTRICTED_FUNCTION,
    "audit-chain-broken": OBJECT_SECURITY_ATTRIBUTES_CHANGED,
    "builtin-archive": SECURITY_CONFIGURATION,
}


def _security_alert(record: AuditEntry, node: Node) -> _Message:
    detail = record.detail
    kind = str(detail.get("alert") or detail.get("reason") or record.event)
    alert_type = NODE_AUTHENTICATION if record.event == "association.rejected" else _ALERT_TYPES.get(kind, NODE_AUTHENTICATION)
    msg = _Message(SECURITY_ALERT, "E", record.at, MINOR_FAILURE, types=(alert_type,))
    msg.participant(_guard(node, requestor=False, role=APPLICATION))
    if record.actor or record.peer_address:
        msg.participant(_peer(record, requestor=True, role=None))
    msg.source(node)
    subject = str(record.peer_address or record.actor or node.ae_title)
    description = str(detail.get("message") or kind)
    msg.participant_object(
        subject, TYPE_SYSTEM_OBJECT, ROLE_SECURITY_RESOURCE, NODE_ID, details=_chain_details(record), description=description
    )
    return msg


_BUILDERS: dict[str, Callable[[AuditEntry, Node], _Message | None]] = {
    "service.started": _application_activity,
    "service.stopped": _application_activity,
    "instance.received": _transferred,
    "instance.forwarded": _transferred,
    "commitment.reported": _transferred,
    "query.relayed": _query,
    "move.relayed": _begin_transferring,
    "pull.completed": _begin_transferring,
    "delete.permitted": _study_deleted,
    "delete.refused": _study_deleted,
    "security.alert": _security_alert,
    "association.rejected": _security_alert,
}

#: guard events that have a DICOM audit message.
EXPORTED_EVENTS = frozenset(_BUILDERS)


def to_message(record: AuditEntry, node: Node) -> str | None:
    """The XML of the DICOM audit message for ``record``, or None when the standard has none for it."""
    builder = _BUILDERS.get(record.event)
    if builder is None:
        return None
    msg = builder(record, node)
    return None if msg is None else msg.xml()
