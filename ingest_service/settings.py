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
    # Clock skew we tolerate on answered_at before calling it "in the future".
    max_future_skew_s: int = Field(default=300, ge=0)
    # 5 ms of linger batches concurrent requests into one produce call.
    producer_linger_ms: int = Field(default=5, ge=0)
