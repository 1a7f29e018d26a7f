"""The admin HTTP API (FastAPI, served by uvicorn in the guard process).

- ``app``: ``create_app(settings, ledger, gate, readiness)``, the endpoints.
- ``server``: ``AdminServer``, uvicorn in a background thread.
- ``problems``: RFC 7807 problem documents for every error.
- ``metrics``: delete decision counters and the ledger gauges computed at scrape time.
- ``readiness``: the checks behind ``/readyz``.
"""
