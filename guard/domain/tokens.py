"""Admin API tokens as the configuration holds them: never in clear, only their SHA-256."""

from __future__ import annotations

import hashlib


def token_hash(token: str) -> str:
    """SHA-256 of a token, hex: what ``[[http.tokens]] sha256`` holds."""
    return hashlib.sha256(token.encode()).hexdigest()
