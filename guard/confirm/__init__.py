"""Confirmation: proving the archive holds each instance, and reporting it truthfully to sources."""
