"""The one rule on missing dependencies: skip on a workstation, fail under ``CI=true``."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip on a workstation, fail under CI: CI must never hide a missing dependency."""
    if IN_CI:
        pytest.fail(f"required for CI but unavailable: {reason}")
    pytest.skip(reason)
