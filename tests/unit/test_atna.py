"""DICOM audit messages (PS3.15 A.5) built from audit records: structure, codes and participant roles."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from guard.domain.states import AuditEvent
from guard.ledger.audit_query import AuditEntry
from guard.services.audit.atna import EXPORTED_EVENTS, Node, to_message
from guard.services.audit.syslog import PRI, octet_counted, rfc5424

SCHEMA = etree.RelaxNG(etree.parse(str(Path(__file__).parents[1] / "data" / "dicom-audit-message.rng")))
NODE = Node(ae_title="GUARD", host="guard-host", site_id="HOSPITAL")


def _record(event: str, outcome: str = "success", **fields: Any) -> AuditEntry:
    base: dict[str, Any] = {
        "seq": 42,
        "at": "2026-11-23T10:00:00.123456+00:00",
        "event": event,
        "outcome": outcome,
        "actor": None,
        "peer_address": None,
        "patient_id": None,
        "study_uid": None,
        "series_uid": None,
        "sop_instance_uid": None,
        "detail": {},
        "prev_hash": "0" * 64,
        "hash": "ab" * 32,
    }
    base.update(fields)
    return AuditEntry(**base)


STUDY = {"patient_id": "PAT001", "study_uid": "1.2.3.4"}

# event record -> (EventID, EventActionCode, EventOutcomeIndicator, EventTypeCodes, {role code: requestor}, objects)
# and the participant objects as type code, type code role, ID type code and object ID.
CASES: list[tuple[AuditEntry, tuple[str, str, str, set[str], dict[str, str], set[tuple[str, str, str, str]]]]] = [
    (_record("service.started", actor="GUARD"), ("110100", "E", "0", {"110120"}, {"110150": "false"}, set())),
    (_record("service.stopped", actor="GUARD"), ("110100", "E", "0", {"110121"}, {"110150": "false"}, set())),
    (
        _record("instance.received", actor="PACS", peer_address="10.1.2.3", detail={"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2"}, **STUDY),
        (
            "110104",
            "C",
            "0",
            set(),
            {"110153": "true", "110152": "false"},
            {("2", "3", "110180", "1.2.3.4"), ("1", "1", "2", "PAT001")},
        ),
    ),
    (
        _record("instance.forwarded", actor="ARCHIVE", **STUDY),
        ("110104", "R", "0", set(), {"110153": "true", "110152": "false"}, {("2", "3", "110180", "1.2.3.4"), ("1", "1", "2", "PAT001")}),
    ),
    (
        _record("commitment.reported", actor="ARCHIVE", detail={"direction": "outbound"}, study_uid="1.2.3.4"),
        ("110104", "R", "0", set(), {"110153": "true", "110152": "false"}, {("2", "3", "110180", "1.2.3.4")}),
    ),
    (
        _record("query.relayed", actor="PACS", peer_address="10.1.2.3", detail={"level": "STUDY", "query": "PatientID=PAT001"}),
        ("110112", "E", "0", set(), {"110153": "true", "110152": "false"}, {("2", "3", "110181", "1.2.840.10008.5.1.4.1.2.2.1")}),
    ),
    (
        _record("move.relayed", actor="PACS", detail={"destination": "VIEWER"}, **STUDY),
        ("110102", "E", "0", set(), {"110153": "true", "110152": "false"}, {("2", "3", "110180", "1.2.3.4"), ("1", "1", "2", "PAT001")}),
    ),
    (
        _record("delete.permitted", actor="admin", detail={"backend": "orthanc", "channel": "http"}, **STUDY),
        ("110105", "D", "0", set(), {"110150": "false"}, {("2", "3", "110180", "1.2.3.4"), ("1", "1", "2", "PAT001")}),
    ),
    (
        _record("delete.refused", "refused", actor="PACS", detail={"reasons": ["unconfirmed"], "channel": "iocm"}, **STUDY),
        ("110105", "D", "4", set(), {"110150": "false"}, {("2", "3", "110180", "1.2.3.4"), ("1", "1", "2", "PAT001")}),
    ),
    (
        _record("security.alert", "failure", actor="admin", peer_address="10.9.9.9", detail={"alert": "bad-token"}),
        ("110113", "E", "4", {"110132"}, {"110150": "false"}, {("2", "13", "110182", "10.9.9.9")}),
    ),
    (
        _record(
            "association.rejected", "refused", actor="INTRUDER", peer_address="10.9.9.9", detail={"reason": "calling-ae-not-recognized"}
        ),
        ("110113", "E", "4", {"110126"}, {"110150": "false"}, {("2", "13", "110182", "10.9.9.9")}),
    ),
]


@pytest.mark.parametrize(("record", "expected"), CASES, ids=[f"{r.event}-{r.outcome}" for r, _ in CASES])
def test_message_follows_the_standard(record: AuditEntry, expected: tuple[Any, ...]) -> None:
    """Each message validates against the A.5.1 structure and carries the codes and roles of its A.5.3 definition."""
    event_id, action, outcome, types, roles, objects = expected
    xml = to_message(record, NODE)
    assert xml is not None
    root = etree.fromstring(xml.encode())
    SCHEMA.assertValid(root)
    ident = root.find("EventIdentification")
    assert ident.find("EventID").get("csd-code") == event_id
    assert ident.find("EventID").get("codeSystemName") == "DCM"
    assert (ident.get("EventActionCode"), ident.get("EventOutcomeIndicator")) == (action, outcome)
    assert {e.get("csd-code") for e in ident.findall("EventTypeCode")} == types
    found_roles = {
        p.find("RoleIDCode").get("csd-code"): p.get("UserIsRequestor")
        for p in root.findall("ActiveParticipant")
        if p.find("RoleIDCode") is not None
    }
    assert roles.items() <= found_roles.items()
    assert sum(p.get("UserIsRequestor") == "true" for p in root.findall("ActiveParticipant")) <= 1
    found_objects = {
        (
            o.get("ParticipantObjectTypeCode"),
            o.get("ParticipantObjectTypeCodeRole"),
            o.find("ParticipantObjectIDTypeCode").get("csd-code"),
            o.get("ParticipantObjectID"),
        )
        for o in root.findall("ParticipantObjectIdentification")
    }
    assert found_objects == objects
    source = root.find("AuditSourceIdentification")
    assert (source.get("AuditSourceID"), source.get("AuditEnterpriseSiteID")) == ("GUARD", "HOSPITAL")


def test_query_message_carries_the_query_and_transfer_syntax() -> None:
    """A.5.3.10: the SOP Queried object holds the query (base64) and a TransferSyntax detail."""
    xml = to_message(_record("query.relayed", actor="PACS", detail={"query": "PatientID=PAT001"}), NODE)
    assert xml is not None
    obj = etree.fromstring(xml.encode()).find("ParticipantObjectIdentification")
    assert base64.b64decode(obj.find("ParticipantObjectQuery").text) == b"PatientID=PAT001"
    details = {d.get("type"): base64.b64decode(d.get("value")).decode() for d in obj.findall("ParticipantObjectDetail")}
    assert details["TransferSyntax"] == "1.2.840.10008.1.2"
    assert details["guard-audit-seq"] == "42"


def test_events_without_a_standard_message_are_not_exported() -> None:
    """Confirmation and internal events have no DICOM audit message; a delete the guard did not carry out is not 'Study Deleted'."""
    for event in set(AuditEvent) - EXPORTED_EVENTS:
        assert to_message(_record(event.value, **STUDY), NODE) is None
    decision_only = _record("delete.permitted", actor="admin", detail={"backend": "decision-only"}, **STUDY)
    assert to_message(decision_only, NODE) is None
    assert to_message(_record("delete.permitted", actor="admin", detail={}, **STUDY), NODE) is None


def test_syslog_message_is_rfc5424_with_octet_counting() -> None:
    """PRI 85 (authpriv.notice), version 1, the record time, MSGID IHE+RFC-3881, no structured data, UTF-8 BOM, then the XML."""
    message = rfc5424("<AuditMessage/>", at="2026-11-23T10:00:00.5+00:00", hostname="guard host", procid="7")
    assert PRI == 85
    assert message == b"<85>1 2026-11-23T10:00:00.500000Z guardhost guard 7 IHE+RFC-3881 - \xef\xbb\xbf<AuditMessage/>"
    numbered = rfc5424("<AuditMessage/>", at="2026-11-23T10:00:00Z", hostname="h", procid="7", seq=12)
    assert b' IHE+RFC-3881 [meta sequenceId="12"] \xef\xbb\xbf<AuditMessage/>' in numbered
    assert octet_counted(message) == str(len(message)).encode() + b" " + message
