"""Forwarding: claim pending instances, send them to the archive, record what it answered."""
