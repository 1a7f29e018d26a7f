"""The audit event catalogue (docs/audit-events.md) and the events the code really emits agree.

Runs last (tests/conftest.py puts it at the end). Every event the suite produced must be in the
catalogue; when the whole suite ran, every event in the catalogue must have been produced by
some test, so that no documented event is dead and no emitted one undocumented.
"""

from __future__ import annotations

import json

import pytest

from guard.domain.states import AuditEvent
from tests.support import catalogue


def test_audit_catalogue_matches_the_events_the_suite_produced(request: pytest.FixtureRequest) -> None:
    """Emitted ⊆ documented always; documented ⊆ emitted when the whole suite ran."""
    documented = catalogue.documented_events()
    assert documented == {e.value for e in AuditEvent}, "docs/audit-events.md and guard.domain.states.AuditEvent disagree"
    assert catalogue.SEEN - documented == set(), "emitted but not in docs/audit-events.md"
    if request.config.stash.get(catalogue.WHOLE_SUITE, False):
        assert documented - catalogue.SEEN == set(), "in the catalogue but no test produced it"
        catalogue.CHECKED_BOTH_WAYS.append(len(documented))


def test_every_catalogue_entry_has_an_example_record() -> None:
    """Each section of docs/audit-events.md shows at least one example JSON record of its own event."""
    sections = catalogue.CATALOGUE.read_text(encoding="utf-8").split("\n### `")[1:]
    without = []
    for section in sections:
        name = section.split("`", 1)[0]
        blocks = [block.split("```", 1)[0] for block in section.split("```json\n")[1:]]
        examples = [json.loads(line) for block in blocks for line in block.splitlines() if line.strip()]
        if not examples or any(example.get("event") != name for example in examples):
            without.append(name)
    assert without == []
