"""Audit services: DICOM audit messages (ATNA) over syslog from a durable outbox, retention, the periodic tasks."""
