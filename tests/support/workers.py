"""Running under pytest-xdist: which process this is, and what a worker hands to the controller.

A worker puts plain values into ``config.workeroutput`` when its session finishes; the
controller reads them from ``node.workeroutput`` in ``pytest_testnodedown`` (tests/conftest.py).
"""

from __future__ import annotations

import pytest

#: Key of a worker's count of contained hostile-input cases in ``workeroutput``.
HOSTILE_CASES = "hostile_cases"


def is_worker(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker (it runs a share of the tests)."""
    return hasattr(config, "workerinput")


def is_controller(config: pytest.Config) -> bool:
    """Whether this process is the pytest-xdist controller (it runs no test, its workers do)."""
    return config.pluginmanager.has_plugin("dsession")


def hostile_summary(cases: int) -> str:
    """The session summary's line on the hostile-input suite (docs/security.md quotes it)."""
    return f"hostile-input suite: {cases} cases, C-ECHO answered after every one"
