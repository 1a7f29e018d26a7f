"""Confirmation: the archive proves it holds each instance (Storage Commitment, C-FIND); re-verification; reconcile."""
