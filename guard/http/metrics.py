"""Metrics of the admin API: delete decision counters, and gauges read from the ledger at scrape time.

The counters live in prometheus-client's default registry, like those of ``guard.runtime.metrics``.
The gauges are not stored anywhere: ``LedgerCollector`` asks the ledger each time ``/metrics``
is scraped, so they are true after a restart and shared by every process on one ledger. Each
admin app has its own registry for its collector (the default registry refuses two collectors
with the same metric names, and tests build many apps in one process).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from guard.domain.errors import LedgerError
from guard.domain.states import CLAIMABLE_STATES, InstanceState
from guard.ledger.confirmations import INBOUND, OUTBOUND
from guard.ledger.dashboard import gauges
from guard.ledger.ledger import Ledger
from guard.runtime.metrics import DELETE_DECISIONS, DELETE_REFUSAL_REASONS


def count_decision(channel: str, outcome: str, reasons: list[str]) -> None:
    """Count one delete decision and, for a refusal, each of its reasons."""
    DELETE_DECISIONS.labels(channel=channel, outcome=outcome).inc()
    for reason in reasons:
        DELETE_REFUSAL_REASONS.labels(channel=channel, reason=reason).inc()


class LedgerCollector(Collector):
    """Gauges computed from the ledger when scraped.

    ``guard_ledger_up`` is 0 and the other gauges are left out when the ledger cannot be read,
    so a scrape never fails because the database does.
    """

    def __init__(self, ledger: Ledger) -> None:
        """Read from ``ledger``, with its clock for ages."""
        self.ledger = ledger

    def collect(self) -> Iterator[Metric]:
        """Yield the gauges (called by the registry at each scrape)."""
        up = GaugeMetricFamily("guard_ledger_up", "Whether the ledger could be read for this scrape (1) or not (0).")
        try:
            facts = gauges(self.ledger)
        except LedgerError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        by_state, pending = facts.by_state, facts.commitments_pending
        states = GaugeMetricFamily("guard_instances", "Instances in the ledger (every version) by state.", labels=["state"])
        for state in InstanceState:
            states.add_metric([state.value], by_state.get(state.value, 0))
        for other in sorted(set(by_state) - {s.value for s in InstanceState}):
            states.add_metric([other], by_state[other])
        yield states
        yield GaugeMetricFamily(
            "guard_dead_letters",
            "Instances in the dead-letter state, waiting for a person.",
            value=by_state.get(InstanceState.DEAD_LETTERED.value, 0),
        )
        yield GaugeMetricFamily(
            "guard_forward_queue_depth",
            "Instances waiting to be forwarded to the archive (received or failed).",
            value=sum(by_state.get(s.value, 0) for s in CLAIMABLE_STATES),
        )
        oldest_at = facts.oldest_pending_at
        age = max(0.0, (self.ledger.clock() - oldest_at).total_seconds()) if oldest_at is not None else 0.0
        yield GaugeMetricFamily(
            "guard_oldest_unconfirmed_age_seconds",
            "Age of the oldest instance not yet confirmed by the archive (0 when there is none).",
            value=age,
        )
        commitments = GaugeMetricFamily(
            "guard_commitments_pending", "Storage Commitment transactions still waiting, by direction.", labels=["direction"]
        )
        for direction in (OUTBOUND, INBOUND):
            commitments.add_metric([direction], pending.get(direction, 0))
        yield commitments
