from __future__ import annotations

from prometheus_client import Counter, Gauge

RESPONSES = Counter(
    "nps_ingest_responses_total",
    "Responses answered, by outcome (accepted, rejected, conflict, unavailable).",
    ["outcome"],
)
for _outcome in ("accepted", "rejected", "conflict", "unavailable"):  # at 0 from the start: see declare_server_errors
    RESPONSES.labels(_outcome)

REPLAY_WATERMARK = Gauge(
    "nps_ingest_replay_watermark_seconds",
    "Unix time before which every accepted event has been read by every consumer group of the responses topic.",
)
