"""The services: what the guard does, called by the entry points (listener, HTTP, CLI).

``ingest`` (durable receipt), ``forward`` (claim and send), ``confirm`` (commitment, C-FIND,
re-verification, reconcile), ``delete`` (the gate), ``qr`` (C-FIND/C-MOVE relay, pull),
``audit`` (ATNA export, retention), ``boundary`` (what a loop does with an unexpected error).
Services call the ledger, the spool and the peers (``guard.dicom``, ``guard.web``); they never
import an entry point.
"""
