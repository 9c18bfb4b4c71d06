from __future__ import annotations

from prometheus_client import Counter, Gauge

RESPONSES = Counter(
    "nps_ingest_responses_total",
    "Responses answered, by outcome (accepted, rejected, conflict, unavailable).",
    ["outcome"],
)
# Each outcome's child, made once: at 0 from the start (see declare_server_errors), and `labels()`
# on every request cost ~0.7 us more than the child's `inc()`.
OUTCOMES = {outcome: RESPONSES.labels(outcome) for outcome in ("accepted", "rejected", "conflict", "unavailable")}

REPLAY_WATERMARK = Gauge(
    "nps_ingest_replay_watermark_seconds",
    "Unix time before which every accepted event has been read by every consumer group of the responses topic.",
)
