from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from delivery_service.domain import EVENT_TYPES, Outcome

QUEUED = Counter(
    "nps_delivery_queued_total",
    "Deliveries queued (one per subscription and event; a redelivered event's are not counted again).",
    ["event_type"],
)
for _type in EVENT_TYPES:
    QUEUED.labels(_type)
SKIPPED_ERASED = Counter(
    "nps_delivery_skipped_erased_total", "Events not queued because the person they name was erased after them."
)
ATTEMPTS = Counter(
    "nps_delivery_attempts_total",
    "Delivery attempts by outcome: delivered, retry (will be tried again), failed (for good), gone (410).",
    ["outcome"],
)
for _outcome in get_args(Outcome):  # at zero from the start: the dashboards' queries have data on a fresh loop
    ATTEMPTS.labels(_outcome)
LATENCY = Histogram(
    "nps_delivery_attempt_seconds",
    "From sending a delivery to its answer's head (timeouts included).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
AGE_AT_DELIVERY = Histogram(
    "nps_delivery_age_seconds",
    "From an event being queued to its delivery (retries included).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3_600, 21_600, 86_400),
)
QUEUE_DEPTH = Gauge("nps_delivery_queue_depth", "Pending deliveries (due now or later).")
OLDEST_PENDING = Gauge("nps_delivery_oldest_pending_seconds", "Age of the oldest pending delivery (0 if none).")
SUBSCRIPTIONS = Gauge("nps_delivery_subscriptions", "Webhook subscriptions by status.", ["status"])
DISABLED = Counter(
    "nps_delivery_subscriptions_disabled_total", "Subscriptions disabled by delivery (410 Gone, failing too long)."
)
IN_FLIGHT = Gauge("nps_delivery_in_flight", "Attempts in flight.")
