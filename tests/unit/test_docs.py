from pathlib import Path

from guard.config.reference import render_reference
from guard.domain.states import AuditEvent

DOCS = Path(__file__).parents[2] / "docs"


def test_configuration_reference_is_up_to_date() -> None:
    """docs/configuration.md is exactly what ``guard config reference`` prints; regenerate it when settings change."""
    assert (DOCS / "configuration.md").read_text() == render_reference()


def test_every_audit_event_is_in_the_catalogue() -> None:
    """Each event name of the code appears as a heading in docs/audit-events.md."""
    text = (DOCS / "audit-events.md").read_text()
    missing = [e.value for e in AuditEvent if f"### `{e.value}`" not in text]
    assert missing == []
