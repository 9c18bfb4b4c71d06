from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from alerts_service.detection import RULES
from alerts_service.domain import Transition

# Labels are bounded: rule (4), transition (2), outcome (4). Never the segment.
SCORES = Counter(
    "nps_alerts_scores_total",
    "ScoreChanged events by outcome: applied; stale (older than the segment's last); superseded (a newer one "
    "in the same batch); no_days (from a scoring too old to send daily counts: ignored).",
    ["outcome"],
)
TRANSITIONS = Counter("nps_alerts_transitions_total", "Alerts fired and resolved.", ["rule", "transition"])
for _rule in RULES:  # every series at zero from the start: the dashboards' queries have data on a fresh loop
    for _transition in Transition:
        TRANSITIONS.labels(_rule, _transition.value)
FIRING = Gauge("nps_alerts_firing", "Alerts firing (or resolving) after the last round.", ["rule"])
ROUND_SECONDS = Histogram(
    "nps_alerts_round_seconds",
    "One evaluation round over every segment.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SEGMENTS_EVALUATED = Gauge("nps_alerts_segments_evaluated", "Segments in the last round.")
VERDICTS = Counter("nps_alerts_verdicts_total", "Rule verdicts reached (segments x rules with enough data).")
SILENCED = Counter("nps_alerts_silenced_total", "Alerts fired while a silence matched: recorded, not published.")
ACKNOWLEDGED = Counter("nps_alerts_acknowledged_total", "Alerts acknowledged through the API.")
DRIVERS = Counter(
    "nps_alerts_drivers_total",
    "Fired drop alerts' requests to the themes service for their drivers: attached (it answered), "
    "failed (no answer in time, or an error: the alert fired without them), off (no NPS_ALERTS_THEMES_URL).",
    ["outcome"],
)
