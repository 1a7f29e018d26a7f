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
)

UID = String(64)
AE = String(16)

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
    UniqueConstraint("sop_instance_uid", "version"),
    Index(None, "state", "next_attempt_at"),
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
    Column("patient_id", String(64), nullable=True),
    Column("study_uid", UID, nullable=True, index=True),
    Column("series_uid", UID, nullable=True),
    Column("sop_instance_uid", UID, nullable=True),
    Column("detail", Text, nullable=False),
)
