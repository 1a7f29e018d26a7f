"""States and audit event names, stored in the ledger as their string values."""

from __future__ import annotations

from enum import StrEnum


class InstanceState(StrEnum):
    """Where one received instance (one version of a SOP Instance) stands.

    ``received`` waits for forwarding; ``failed`` waits for a retry after a transient failure;
    ``forwarded`` was accepted by the archive with C-STORE Success but is not yet proven held;
    ``confirmed`` the archive has proven it holds it (Storage Commitment or C-FIND);
    ``missing-in-archive`` was confirmed once and later not found; ``dead-lettered`` will not be
    retried without a person acting; ``superseded`` a newer version of the same SOP Instance
    arrived before this one was forwarded.
    """

    RECEIVED = "received"
    FAILED = "failed"
    FORWARDED = "forwarded"
    CONFIRMED = "confirmed"
    MISSING = "missing-in-archive"
    DEAD_LETTERED = "dead-lettered"
    SUPERSEDED = "superseded"


#: States from which a forwarding worker may claim an instance.
CLAIMABLE_STATES = (InstanceState.RECEIVED, InstanceState.FAILED)


class AuditEvent(StrEnum):
    """The audit event catalogue (``noun.verb``), part of the public interface."""

    ASSOCIATION_ACCEPTED = "association.accepted"
    ASSOCIATION_REJECTED = "association.rejected"
    INSTANCE_RECEIVED = "instance.received"
    INSTANCE_FORWARDED = "instance.forwarded"
    INSTANCE_CONFIRMED = "instance.confirmed"
    INSTANCE_FAILED = "instance.failed"
    INSTANCE_DEAD_LETTERED = "instance.dead_lettered"
    INSTANCE_REQUEUED = "instance.requeued"
    INSTANCE_MISSING = "instance.missing_in_archive"
    INSTANCE_SPOOL_REMOVED = "instance.spool_removed"
    INSTANCE_BYTES_DIFFER = "instance.bytes_differ"
    BYTES_CHECKED = "bytes.checked"
    COMMITMENT_REQUESTED = "commitment.requested"
    COMMITMENT_REPORTED = "commitment.reported"
    DELETE_REQUESTED = "delete.requested"
    DELETE_PERMITTED = "delete.permitted"
    DELETE_REFUSED = "delete.refused"
    QUERY_RELAYED = "query.relayed"
    MOVE_RELAYED = "move.relayed"
    PULL_COMPLETED = "pull.completed"
    RECONCILE_COMPLETED = "reconcile.completed"
    AUDIT_EXPORTED = "audit.exported"
    SECURITY_ALERT = "security.alert"
    LEASE_ACQUIRED = "lease.acquired"
    SERVICE_STARTED = "service.started"
    SERVICE_STOPPED = "service.stopped"
    CONFIG_LOADED = "config.loaded"


class Outcome(StrEnum):
    """The outcome of an audited action."""

    SUCCESS = "success"
    FAILURE = "failure"
    REFUSED = "refused"


class ByteResult(StrEnum):
    """The outcome of comparing one instance retrieved from the archive with the guard's record of it.

    ``match``: same digest; ``differ``: another digest; ``absent``: the archive did not return
    it; ``unverifiable``: no reference digest to compare with (content comparison without the
    spool copy it is computed from).
    """

    MATCH = "match"
    DIFFER = "differ"
    ABSENT = "absent"
    UNVERIFIABLE = "unverifiable"
