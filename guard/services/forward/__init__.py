"""Forwarding: workers claim pending instances from the ledger and send them to the archive."""
