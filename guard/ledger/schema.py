"""Tables of the ledger (SQLAlchemy Core). Migrations must build exactly this schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
)

from guard.domain.states import CLAIMABLE_STATES

UID = String(64)
AE = String(16)
NODE = String(32)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    },
)

studies = Table(
    "studies",
    metadata,
    Column("study_uid", UID, primary_key=True),
    Column("patient_id", String(64), nullable=True),
    Column("first_received_at", DateTime(timezone=True), nullable=False),
    Column("last_received_at", DateTime(timezone=True), nullable=False),
    Column("last_verified_at", DateTime(timezone=True), nullable=True),
    # Set when a permitted delete was carried out; cleared when an instance of the study arrives again.
    Column("deleted_at", DateTime(timezone=True), nullable=True),
)

series = Table(
    "series",
    metadata,
    Column("series_uid", UID, primary_key=True),
    Column("study_uid", UID, nullable=False, index=True),
    Column("modality", String(16), nullable=True),
    Column("first_received_at", DateTime(timezone=True), nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sop_instance_uid", UID, nullable=False),
    Column("version", Integer, nullable=False),
    Column("study_uid", UID, nullable=False, index=True),
    Column("series_uid", UID, nullable=False),
    Column("sop_class_uid", UID, nullable=False),
    Column("transfer_syntax", UID, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("spool_path", Text, nullable=True),
    Column("patient_id", String(64), nullable=True),
    Column("calling_ae", AE, nullable=False),
    Column("peer_address", String(64), nullable=False),
    Column("state", String(24), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("forwarded_at", DateTime(timezone=True), nullable=True),
    Column("confirmed_at", DateTime(timezone=True), nullable=True),
    Column("lease_owner", String(80), nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    # Confirmation: which proofs the archive has given, and the request in flight.
    Column("commit_confirmed_at", DateTime(timezone=True), nullable=True),
    Column("find_confirmed_at", DateTime(timezone=True), nullable=True),
    Column("commit_transaction_uid", UID, nullable=True),
    Column("confirm_attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("confirm_next_at", DateTime(timezone=True), nullable=True),
    Column("resends", Integer, nullable=False, default=0, server_default="0"),
    Column("spool_removed_at", DateTime(timezone=True), nullable=True),
    # The node that received the instance and holds its spool copy (node-local spool).
    Column("node", NODE, nullable=True),
    # Proof of bytes (guard/ledger/byte_checks.py): the last byte check and its result, when the
    # rolling re-verification is due to check again, and the content digest (verify.compare = content).
    Column("bytes_checked_at", DateTime(timezone=True), nullable=True),
    Column("bytes_result", String(16), nullable=True),
    Column("bytes_due_at", DateTime(timezone=True), nullable=True),
    Column("content_sha256", String(64), nullable=True),
    UniqueConstraint("sop_instance_uid", "version"),
    Index(None, "state", "next_attempt_at"),
    Index(None, "state", "confirm_next_at"),
    # Each archive report names its transaction: without this, applying one reads every instance.
    Index(None, "commit_transaction_uid"),
)

#: The instances forwarding may claim (``CLAIMABLE_STATES``), as a condition written with literal
#: values: ``ix_instances_claimable`` holds exactly these rows in claim order, and SQLite and
#: PostgreSQL use a partial index only for a query whose condition is the index's own (bound
#: parameters do not match). Without it SQLite read every instance the ledger holds for each
#: claim (``guard.ledger.instances.claim_pending``), and PostgreSQL sorted the whole backlog.
CLAIMABLE = instances.c.state.in_([literal_column(f"'{state.value}'") for state in CLAIMABLE_STATES])
CLAIMABLE_INDEX = "ix_instances_claimable"
Index(CLAIMABLE_INDEX, instances.c.id, sqlite_where=CLAIMABLE, postgresql_where=CLAIMABLE)

# Every byte check of an instance: when, found by which policy, by which retrieve, with what
# result, and both digests (the one recorded and the one the archive's copy has).
byte_checks = Table(
    "byte_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance_id", Integer, nullable=False, index=True),
    Column("study_uid", UID, nullable=False, index=True),
    Column("sop_instance_uid", UID, nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("found_by", String(16), nullable=False),
    Column("method", String(16), nullable=False),
    Column("compare", String(16), nullable=False),
    Column("result", String(16), nullable=False),
    Column("expected_sha256", String(64), nullable=True),
    Column("archive_sha256", String(64), nullable=True),
)

commitment_transactions = Table(
    "commitment_transactions",
    metadata,
    Column("transaction_uid", UID, primary_key=True),
    # outbound: the guard asked the archive; inbound: a source asked the guard.
    Column("direction", String(8), nullable=False),
    Column("peer_ae", AE, nullable=False),
    Column("peer_address", String(64), nullable=True),
    Column("study_uid", UID, nullable=True),
    Column("state", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deadline_at", DateTime(timezone=True), nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Index(None, "direction", "state", "next_attempt_at"),
)

commitment_references = Table(
    "commitment_references",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("transaction_uid", UID, nullable=False, index=True),
    Column("instance_id", Integer, nullable=True),
    Column("sop_class_uid", UID, nullable=False),
    Column("sop_instance_uid", UID, nullable=False),
    Column("outcome", String(16), nullable=True),
    Column("failure_reason", Integer, nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("event", String(40), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),
    Column("actor", String(80), nullable=True),
    Column("peer_address", String(64), nullable=True),
    Column("patient_id", String(64), nullable=True, index=True),
    Column("study_uid", UID, nullable=True, index=True),
    Column("series_uid", UID, nullable=True),
    Column("sop_instance_uid", UID, nullable=True),
    Column("detail", Text, nullable=False),
    # The hash chain (see guard/ledger/chain.py): the previous record's hash and this one's.
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # The node that wrote the record (hashed from chain version 2 on).
    Column("node", NODE, nullable=True),
    Index(None, "actor"),
)

# Where the chain starts after older records were exported and removed (retention): the
# last removed record. One row at most.
audit_anchor = Table(
    "audit_anchor",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("cut_at", DateTime(timezone=True), nullable=False),
    Column("export_file", Text, nullable=False),
)

# How far each exporter (the ATNA syslog sender) has delivered the audit log: a durable
# outbox cursor over ``audit_log.seq``.
audit_exports = Table(
    "audit_exports",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("last_seq", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The guard nodes on this ledger: each heartbeats its row (guard status, /status, the status page).
nodes = Table(
    "nodes",
    metadata,
    Column("node", NODE, primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("stopped_at", DateTime(timezone=True), nullable=True),
    Column("ready", Integer, nullable=False, default=0),
    Column("state", String(16), nullable=False),
    Column("ae_title", AE, nullable=False),
    Column("dicom_port", Integer, nullable=True),
    Column("http_port", Integer, nullable=True),
    Column("version", String(32), nullable=False),
    Column("pid", Integer, nullable=True),
)

# Cluster-wide task leases (confirmation, source reports, spool clean-up, the ATNA outbox): one
# holder at a time; ``epoch`` grows at every change of holder, and every state change of the
# task checks holder and epoch in its own transaction (guard/ledger/leases.py).
task_leases = Table(
    "task_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(80), nullable=True),
    Column("node", NODE, nullable=True),
    Column("epoch", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
