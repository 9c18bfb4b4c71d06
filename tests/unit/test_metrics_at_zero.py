"""Series with a known, bounded label set exist at zero from start-up (issue 39): every query of the
two dashboards and the alert rules has a series on a fresh loop, and a first event is an increase."""

from __future__ import annotations

from typing import get_args

from prometheus_client import REGISTRY

from alerts_service import metrics as alerts_metrics  # noqa: F401  (importing defines the series)
from alerts_service.detection import RULES
from delivery_service import metrics as delivery_metrics  # noqa: F401
from delivery_service.domain import EVENT_TYPES, Outcome
from followup_service import metrics as followup_metrics  # noqa: F401
from followup_service.tickets.domain import PRIORITIES


def labels_of(sample_name: str) -> set[tuple[tuple[str, str], ...]]:
    return {
        tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == sample_name
    }


def test_alert_transitions_exist_for_every_rule_and_transition() -> None:
    found = labels_of("nps_alerts_transitions_total")
    assert {(("rule", r), ("transition", t)) for r in RULES for t in ("fired", "resolved")} <= found
    assert len(RULES) == 5


def test_ticket_timing_histograms_exist_for_every_priority() -> None:
    for name in ("nps_ticket_first_contact_seconds_count", "nps_ticket_resolution_seconds_bucket"):
        assert {(("priority", p),) for p in PRIORITIES} <= labels_of(name), name


def test_delivery_attempts_and_queued_exist_for_every_outcome_and_event_type() -> None:
    assert {(("outcome", o),) for o in get_args(Outcome)} <= labels_of("nps_delivery_attempts_total")
    assert {(("event_type", t),) for t in EVENT_TYPES} <= labels_of("nps_delivery_queued_total")
