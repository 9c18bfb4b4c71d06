from __future__ import annotations

from prometheus_client import Counter, Gauge

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

# Per segment only for the segments an operator names (NPS_SCORING_METRIC_SEGMENTS, at most 50):
# a label per segment of the data would be unbounded. Read from the counts every
# NPS_SCORING_METRIC_INTERVAL_S over NPS_SCORING_METRIC_WINDOW (the gauges' `window` help says which).
SEGMENT_SCORE = Gauge(
    "nps_segment_score",
    "NPS (-100..100) of each configured segment over the metric window; NaN with no response.",
    ["segment"],
)
SEGMENT_SCORE_LOW = Gauge(
    "nps_segment_score_ci95_low", "Lower end of the adjusted-Wald 95% interval of nps_segment_score.", ["segment"]
)
SEGMENT_SCORE_HIGH = Gauge(
    "nps_segment_score_ci95_high", "Upper end of the adjusted-Wald 95% interval of nps_segment_score.", ["segment"]
)
SEGMENT_RESPONSES = Gauge(
    "nps_segment_responses",
    "Responses of each configured segment over the metric window, by category (promoter, passive, detractor).",
    ["segment", "category"],
)
SEGMENT_WINDOW_DAYS = Gauge("nps_segment_window_days", "Days in the window of the nps_segment_* gauges.")

INVITATIONS = Counter(
    "nps_scoring_invitations_total", "Invitations counted for response rates (each invitation_id once)."
)
SEGMENT_INVITED = Gauge(
    "nps_segment_invited",
    "People invited (invitations and prompts shown) in each configured segment over the metric window.",
    ["segment"],
)
SEGMENT_RESPONSE_RATE = Gauge(
    "nps_segment_response_rate",
    "Share (0..1) of the invitations of each configured segment over the metric window that a response answered; "
    "NaN with no invitation.",
    ["segment"],
)
SEGMENT_ASKED_TWICE = Gauge(
    "nps_segment_asked_twice_share",
    "Of the people of each configured segment invited in the last 30 days, the share invited two or more times "
    "(survey fatigue); NaN with nobody invited.",
    ["segment"],
)
