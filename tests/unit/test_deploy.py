"""The dashboard and the alert rules only use metrics the code declares: a renamed metric must not
leave a silent, empty panel or an alert that can never fire."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import alerts_service.metrics
import delivery_service.metrics
import followup_service.metrics
import ingest_service.metrics
import scoring_service.metrics
import shared.metrics
import themes_service.metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
LOADED = (
    alerts_service.metrics,
    delivery_service.metrics,
    followup_service.metrics,
    ingest_service.metrics,
    scoring_service.metrics,
    shared.metrics,
    themes_service.metrics,
)


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def declared() -> set[str]:
    """The series names our metrics expose, whether or not they have samples yet."""
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("nps_")
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def our_metrics() -> list[MetricWrapperBase]:
    return [v for module in LOADED for v in vars(module).values() if isinstance(v, MetricWrapperBase)]


def referenced(expr: str) -> set[str]:
    return {m for m in re.findall(r"\b(nps_[a-z_]+)\b", expr)}


DASHBOARDS = ("nps-loop.json", "nps-customer-experience.json")


def test_every_dashboard_metric_exists() -> None:
    assert sorted(p.name for p in (DEPLOY / "grafana").glob("*.json")) == sorted(DASHBOARDS)
    for name in DASHBOARDS:
        dashboard = json.loads((DEPLOY / "grafana" / name).read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        used = set().union(*(referenced(e) for e in exprs))
        assert used, f"{name} queries no nps_ metric"
        assert used - declared() == set(), name
        assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"]), name


def test_every_alert_rule_metric_exists() -> None:
    rules = (DEPLOY / "prometheus" / "rules.yml").read_text()
    used = referenced(rules)
    assert {"nps_consumer_lag", "nps_ingest_responses_total", "nps_alerts_firing"} <= used
    assert used - declared() == set()


def test_metric_labels_are_bounded() -> None:
    # Each of these has a handful of values fixed by the code, never a value a client chooses.
    allowed = {"service", "topic", "outcome", "method", "route", "status", "kind", "transition"}
    # The ticket metrics: four priorities, two deadlines, five age buckets, three loop operations.
    allowed |= {"priority", "deadline", "age", "op"}
    # Delivery's: the six outgoing event types.
    allowed |= {"event_type"}
    allowed |= {"rule"}  # alerts: drop, ewma, incident, silence
    allowed |= {"category"}  # promoter, passive, detractor
    # Named by the operator, never taken from the data: at most 50 segments (NPS_SCORING_METRIC_SEGMENTS,
    # checked at start-up) and the taxonomy's themes (a file the operator writes).
    allowed |= {"segment", "theme"}
    # Named in the follow-up policy (an operator's file): its experiments' ids and arms (at most 10 a rule).
    allowed |= {"experiment", "arm"}
    metrics = our_metrics()
    assert len(metrics) >= 15
    for metric in metrics:
        assert set(metric._labelnames) <= allowed, (metric, metric._labelnames)
