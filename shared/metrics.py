"""Metrics recorded by the shared plumbing (consumer loop, HTTP middleware, outbox).

Labels are bounded: `service` (4 values), `topic` (6), `outcome` (a few), `route` (the route
template, never the raw path), `status` (HTTP status class). Never a respondent, a comment,
an email or any other value a client controls."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# `*_created` series double the scrape size and no dashboard or rule here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONSUMER_EVENTS = Counter(
    "nps_consumer_events_total",
    "Messages the consumer loop finished with, by outcome (processed, deadlettered).",
    ["service", "topic", "outcome"],
)
CONSUMER_BATCH_SIZE = Histogram(
    "nps_consumer_batch_size",
    "Messages per batch handed to the service's handler.",
    ["service"],
    buckets=(1, 10, 50, 100, 500, 1_000, 2_000, 5_000, 10_000),
)
CONSUMER_BATCH_SECONDS = Histogram(
    "nps_consumer_batch_seconds",
    "Seconds from a batch's arrival to its offsets being committed.",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "nps_consumer_lag",
    "Messages behind the end of the topic, summed over this process's partitions.",
    ["service", "topic"],
)
CONSUMER_RETRIES = Counter(
    "nps_consumer_retries_total",
    "Batches retried because the database or broker failed (nothing committed in between).",
    ["service"],
)
OUTBOX_PUBLISHED = Counter("nps_outbox_published_total", "Events published from the transactional outbox.", ["service"])
HTTP_HEADS_TIMED_OUT = Counter(
    "nps_http_heads_timed_out_total",
    "Connections closed because the request line and headers did not arrive in time (slow clients).",
)
HTTP_REQUESTS = Counter(
    "nps_http_requests_total",
    "HTTP requests answered, by route template and status class.",
    ["service", "method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "nps_http_request_seconds",
    "HTTP request duration by route template.",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
