from __future__ import annotations

from prometheus_client import Counter

RESPONSES = Counter(
    "nps_ingest_responses_total",
    "Responses answered, by outcome (accepted, rejected, unavailable).",
    ["outcome"],
)
