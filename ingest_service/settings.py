from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NPS_INGEST_", env_file=".env", extra="ignore")

    port: int = 8000
    # A 202 waits for the broker's ack; past this the client gets 503 + Retry-After instead of
    # a hanging request (BRIEF.md: "503 with Retry-After within 1 s").
    publish_timeout_s: float = Field(default=0.9, gt=0)
    # Clock skew tolerated on answered_at before calling it "in the future".
    max_future_skew_s: int = Field(default=300, ge=0)
    # Oldest answered_at accepted (backfills of up to three years).
    max_age_days: int = Field(default=1095, ge=1)
    # No linger: aiokafka still batches what accumulates while a produce request is in flight.
    # make bench: 5 ms made single POSTs bimodal (~2,500 or ~4,500/s from run to run); 0 gives
    # ~6,800-7,300/s, p99 ~15 ms, run after run.
    producer_linger_ms: int = Field(default=0, ge=0)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_batch_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # Per API key: requests per second, and the burst a client may use at once (0 turns it off).
    rate_limit_per_s: float = Field(default=2_000, ge=0)
    rate_limit_burst: float = Field(default=4_000, ge=1)
    # Serve POST /v1/responses, /validate and /batch as raw ASGI routes (several times the
    # throughput); false serves them through FastAPI like every other route.
    raw_routes: bool = True
    # How soon a new or revoked API key takes effect.
    key_refresh_s: float = Field(default=5.0, gt=0)
