from __future__ import annotations

from prometheus_client import Counter

RESPONSES_COUNTED = Counter("nps_scoring_responses_counted_total", "Responses added to the aggregates.")
DUPLICATES_DROPPED = Counter(
    "nps_scoring_duplicates_dropped_total", "Responses seen again (same response_id) and not counted twice."
)
LATE_RESPONSES = Counter(
    "nps_scoring_late_responses_total",
    "Responses counted into an earlier UTC day than the one they arrived on.",
)
SCORE_EVENTS = Counter("nps_scoring_score_changed_total", "ScoreChanged events queued for publishing.")
NOT_YET_APPLIED = Counter(
    "nps_scoring_events_not_applied_total",
    "Revision and erasure events decoded but not yet applied to the aggregates.",
)
