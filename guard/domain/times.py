"""Times given by people (CLI options, API query parameters): ISO 8601, UTC when no zone is given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def parse_utc(value: str) -> datetime:
    """``value`` as an aware UTC datetime; raise ``ValueError`` when it is not an ISO 8601 date or time.

    A time whose conversion to UTC would leave the representable range (``0001-01-01T00:00+05:00``)
    is clamped to it.
    """
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        ahead = (parsed.utcoffset() or timedelta(0)) > timedelta(0)
        return datetime.min.replace(tzinfo=UTC) if ahead else datetime.max.replace(tzinfo=UTC)
