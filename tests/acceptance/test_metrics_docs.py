"""docs/metrics.md and ``GET /metrics`` of a running guard name the same ``guard_*`` metrics."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.conftest import GuardFactory
from tests.support.ports import free_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
#: A metric named in the first column of a table row of the doc.
DOC_ROW = re.compile(r"^\|\s*`(guard_[a-z0-9_]+)`\s*\|", re.MULTILINE)


def documented_metrics() -> set[str]:
    """Metric names in the first column of the doc's tables."""
    return set(DOC_ROW.findall(DOC.read_text()))


def exported_metrics(text: str) -> set[str]:
    """``guard_*`` metric names as exposed (counters with their ``_total``).

    The client library's ``*_created`` series (when a counter or histogram started) are not metrics of their own.
    """
    names = set()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("guard_") and not family.name.endswith("_created"):
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def test_every_documented_metric_is_exported_and_every_exported_metric_is_documented(guard_factory: GuardFactory) -> None:
    """A running guard's /metrics has every metric docs/metrics.md names, and nothing guard_* that it does not."""
    http_port = free_port()
    guard = guard_factory(archive_port=free_port(), http={"bind": "127.0.0.1", "port": http_port}).start()
    answer = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=30)
    assert answer.status_code == 200
    exported = exported_metrics(answer.text)
    documented = documented_metrics()
    assert len(documented) >= 15
    assert sorted(documented - exported) == [], "documented but not exported"
    assert sorted(exported - documented) == [], "exported but not documented in docs/metrics.md"
    guard.stop()
