from __future__ import annotations

from prometheus_client import Counter

EVENTS = Counter(
    "nps_scoring_events_total",
    "Response events by outcome: applied (a new or newer version), ignored (a duplicate, a redelivery or an "
    "out-of-date version), erasure.",
    ["outcome"],
)
RESPONSES_ERASED = Counter(
    "nps_scoring_responses_erased_total", "Responses removed from every aggregate by an erasure."
)
LATE_RESPONSES = Counter(
    "nps_scoring_late_responses_total",
    "Responses counted into an earlier UTC day than the one they arrived on.",
)
SEGMENTS_CAPPED = Counter(
    "nps_scoring_capped_segments_total",
    "Segment memberships counted under 'other' because their dimension reached its cardinality cap.",
)
SCORE_EVENTS = Counter("nps_scoring_score_changed_total", "ScoreChanged events queued for publishing.")
