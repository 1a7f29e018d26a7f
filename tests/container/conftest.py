"""The container test builds an image (several minutes): it runs under ``make test-container`` only.

``make test`` would otherwise collect it; ``RUN_CONTAINER_TESTS=1`` (set by the make target)
lets it in. See docs/development.md for its duration and when to run it.
"""

from __future__ import annotations

import os

if os.environ.get("RUN_CONTAINER_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]
