from __future__ import annotations

from prometheus_client import Counter, Gauge

RESPONSES = Counter(
    "nps_ingest_responses_total",
    "Responses answered, by outcome (accepted, rejected, unavailable).",
    ["outcome"],
)

REPLAY_WATERMARK = Gauge(
    "nps_ingest_replay_watermark_seconds",
    "Unix time before which every accepted event has been read by every consumer group of the responses topic.",
)
