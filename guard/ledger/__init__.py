"""The ledger: the durable record of what the guard received, where it went, and the audit trail.

``schema`` declares the tables, ``db`` opens the database and runs migrations, ``instances``
holds the queries for ingest and forwarding, ``audit`` writes audit records inside the same
transaction as the state change they describe.
"""
