"""The hostile-input suite counts its cases, and docs/security.md reports that number."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
DOC = HERE.parent.parent / "docs" / "security.md"


def test_the_documented_case_count_matches_the_suite() -> None:
    """Every collected case of tests/hostile (but this one) is counted in docs/security.md."""
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", str(HERE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    cases = [line for line in collected.splitlines() if "::" in line and "test_catalogue.py" not in line]
    documented = re.search(r"It has \*\*(\d+) cases\*\*", DOC.read_text())
    assert documented is not None, "docs/security.md does not state the number of cases"
    assert len(cases) == int(documented.group(1))
