"""The study-level state: each rule of ``guard.ledger.study_report`` in its order of precedence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from guard.ledger.study_report import StudyState, study_state

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
QUIET = timedelta(seconds=2)
LONG_AGO = NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("counts", "last", "deleted", "expected"),
    [
        ({}, None, None, StudyState.UNKNOWN),
        ({"confirmed": 3}, LONG_AGO, LONG_AGO, StudyState.DELETED),
        ({"confirmed": 2, "dead-lettered": 1, "missing-in-archive": 1}, LONG_AGO, None, StudyState.DEAD_LETTERED),
        ({"confirmed": 2, "missing-in-archive": 1, "received": 1}, NOW, None, StudyState.MISSING),
        ({"confirmed": 3}, NOW, None, StudyState.CONFIRMED),
        ({"confirmed": 1, "received": 1}, NOW - timedelta(seconds=1), None, StudyState.RECEIVING),
        ({"confirmed": 1, "failed": 1, "forwarded": 1}, LONG_AGO, None, StudyState.FORWARDING),
        ({"received": 1}, LONG_AGO, None, StudyState.FORWARDING),
        ({"confirmed": 1, "forwarded": 2}, LONG_AGO, None, StudyState.CONFIRMING),
    ],
)
def test_the_first_rule_that_applies_decides_the_state(
    counts: dict[str, int], last: datetime | None, deleted: datetime | None, expected: StudyState
) -> None:
    """Unknown, deleted, dead-lettered, missing, confirmed, receiving, forwarding, confirming: the first that applies wins."""
    assert expected == study_state(counts, last_received_at=last, deleted_at=deleted, now=NOW, quiet=QUIET)


def test_states_are_stored_and_printed_as_their_strings() -> None:
    """The enum's values are the names the administrator's guide documents."""
    assert [s.value for s in StudyState] == [
        "unknown",
        "deleted",
        "dead-lettered",
        "missing-in-archive",
        "confirmed",
        "receiving",
        "forwarding",
        "confirming",
    ]
