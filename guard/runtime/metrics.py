"""Prometheus metrics. This module owns the process-wide metric objects (prometheus-client's registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MISSING_IN_ARCHIVE = Counter(
    "guard_missing_in_archive_total",
    "Confirmed instances that re-verification later found missing from the archive.",
)
LOST_IN_ARCHIVE = Counter(
    "guard_lost_in_archive_total",
    "Confirmed instances missing from the archive with no spool copy left to re-send (a person must act).",
)
COMMITMENT_REQUESTS = Counter("guard_commitment_requests_total", "Storage Commitment requests sent to the archive.", ["outcome"])
SPOOL_REMOVED = Counter("guard_spool_removed_total", "Spool copies removed after confirmation and the grace period.")
COMMITMENT_LATENCY = Histogram(
    "guard_commitment_latency_seconds",
    "Time from a Storage Commitment request to the archive's report.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
AUDIT_CHAIN_INTACT = Gauge(
    "guard_audit_chain_intact",
    "1 when the start-up check of the audit log's hash chain passed, 0 when it found a broken record.",
)
AUDIT_EXPORT_SENT = Counter("guard_audit_export_messages_total", "DICOM audit messages delivered to the syslog collector.")
AUDIT_EXPORT_BACKLOG = Gauge(
    "guard_audit_export_backlog",
    "Audit records not yet delivered to the syslog collector (the durable outbox).",
)
AUDIT_EXPORT_UP = Gauge("guard_audit_export_up", "1 when the syslog collector took the last batch, 0 while it is unreachable.")
DELETE_DECISIONS = Counter(
    "guard_delete_decisions_total",
    "Delete requests decided, by channel and outcome (permitted, refused, backend-failed).",
    ["channel", "outcome"],
)
DELETE_REFUSAL_REASONS = Counter(
    "guard_delete_refusal_reasons_total",
    "Reasons given for refused deletes, by channel and reason code (a refusal may count under several reasons).",
    ["channel", "reason"],
)
ARCHIVE_REACHABLE = Gauge(
    "guard_archive_reachable",
    "Whether the last C-ECHO probe of the archive succeeded (1) or not (0, also before the first probe).",
)
ARCHIVE_ECHO_SECONDS = Gauge("guard_archive_echo_seconds", "Round-trip time of the last successful C-ECHO probe of the archive.")
BYTE_CHECKS = Counter(
    "guard_byte_checks_total",
    "Instances retrieved from the archive and compared with the digest recorded on receipt, by policy and result.",
    ["found_by", "result"],
)
