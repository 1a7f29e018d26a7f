"""Response models of the admin API; they are its OpenAPI document."""

# No ``from __future__ import annotations``: pydantic and FastAPI read these annotations at runtime.

from typing import Any, Literal

from pydantic import BaseModel, Field

from guard.http.problems import Problem
from guard.ledger.study_report import StudyState


class Health(BaseModel):
    """The process is alive."""

    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    """Readiness and the checks it rests on."""

    status: Literal["ready", "not-ready"]
    checks: dict[str, bool]


class Deletable(BaseModel):
    """The delete gate's decision for the study now, without carrying anything out."""

    decision: Literal["permitted", "refused"]
    reasons: list[str] = Field(description="Refusal reason codes; empty when permitted.")
    sentence: str
    evidence: dict[str, Any]


class DeadLetter(BaseModel):
    """An instance of the study that will not be forwarded without a person acting."""

    sop_instance_uid: str
    reason: str | None
    status: str | None
    attempts: int


class PendingCommitment(BaseModel):
    """A Storage Commitment transaction of the study still waiting."""

    transaction_uid: str
    direction: str
    peer_ae: str
    references: int
    created_at: str
    deadline_at: str


class StudyView(BaseModel):
    """What the guard knows of one study (the same report as ``guard status STUDY_UID --json``) and whether it may be deleted now."""

    study_uid: str
    known: bool
    state: StudyState = Field(description="Where the study stands as a whole; see the administrator's guide for each state.")
    instances: int = Field(description="Instances of the study (newest version of each SOP Instance).")
    counts: dict[str, int] = Field(description="Instances per state.")
    last_received_at: str | None = Field(description="When the last instance of the study arrived (UTC).")
    deleted_at: str | None = Field(description="When a permitted delete was carried out, if nothing arrived since (UTC).")
    dead_letters: list[DeadLetter]
    pending_commitments: list[PendingCommitment]
    deletable: Deletable


class DeletePermitted(BaseModel):
    """The delete was permitted and carried out by the backend."""

    decision: Literal["permitted"] = "permitted"
    study_uid: str
    reasons: list[str] = Field(default_factory=list)
    sentence: str
    evidence: dict[str, Any]
    carried_out: Literal[True] = True
    backend: str = Field(description="Who carried it out: decision-only (the caller deletes), orthanc or dicomweb.")


class DeleteRefusedProblem(Problem):
    """A refused delete (409): the problem document with the decision."""

    decision: Literal["refused"]
    study_uid: str
    reasons: list[str]
    sentence: str
    evidence: dict[str, Any]


class BackendFailedProblem(Problem):
    """A permitted delete the backend could not carry out (502)."""

    decision: Literal["permitted"]
    carried_out: Literal[False]
    study_uid: str
    backend: str
    backend_error: str
    sentence: str
    evidence: dict[str, Any]


class AuditRecordView(BaseModel):
    """One audit record."""

    seq: int
    at: str | None
    event: str
    outcome: str
    actor: str | None
    peer_address: str | None
    patient_id: str | None
    study_uid: str | None
    series_uid: str | None
    sop_instance_uid: str | None
    detail: dict[str, Any]
    prev_hash: str = Field(description="Hash of the record before this one in the chain.")
    hash: str = Field(description="SHA-256 of this record's canonical encoding and prev_hash.")


class AuditPage(BaseModel):
    """A page of audit records, oldest first; ``next`` is the ``after`` cursor of the next page, null on the last."""

    records: list[AuditRecordView]
    next: int | None
