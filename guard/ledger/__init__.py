"""The ledger: the durable record of what the guard received, where it went, and the audit trail.

All SQL of the guard is in this package. ``ledger`` holds the ``Ledger``, the one seam to the
database (``transaction()`` for writes with their audit records, ``read()`` for reads), which
turns every database error into ``LedgerUnavailableError`` (transient) or
``LedgerRejectedError`` (permanent). ``schema`` declares the tables and ``db`` opens the
database and runs migrations; ``audit`` writes audit records inside the same transaction as the
state change they describe, ``chain`` hashes them, ``audit_query``, ``audit_verify`` and
``audit_export`` read, check, export and cut the audit log. ``instances`` holds the queries for
ingest and forwarding, ``confirmations`` and ``source_commitments`` those of Storage Commitment
and C-FIND proof, ``archive_loss`` the one rule for an instance the archive does not list,
``verification`` and ``reconcile`` the later checks; ``study_report``, ``dashboard`` and
``query_answers`` are the reads behind ``guard status``, the admin API, the status page,
``/metrics`` and C-FIND answers from the ledger.
"""
