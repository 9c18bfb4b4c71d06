from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NPS_INGEST_", env_file=".env", extra="ignore")

    port: int = Field(default=8000, description="ingest's HTTP port")
    # A 202 waits for the broker's ack; past this the client gets 503 + Retry-After instead of a
    # hanging request. Under 1 s, so a client learns of a broker outage within a second.
    publish_timeout_s: float = Field(
        default=0.9, gt=0, description="how long a POST waits for the broker's ack before answering 503"
    )
    max_future_skew_s: int = Field(default=300, ge=0, description="clock skew tolerated on `answered_at`")
    max_age_days: int = Field(default=1095, ge=1, description="oldest `answered_at` accepted (backfills)")
    # No linger: aiokafka still batches what accumulates while a produce request is in flight.
    # make bench: 5 ms made single POSTs bimodal (~2,500 or ~4,500/s from run to run); 0 gives
    # ~6,800-7,300/s, p99 ~15 ms, run after run.
    producer_linger_ms: int = Field(
        default=0, ge=0, description="how long the producer waits to gather events into one request"
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="larger bodies get 413 (single POST, PUT)")
    max_batch_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="larger batch bodies get 413")
    # The event log behind `nps ingest replay` (ingest_service/replay.py).
    replay_retention_hours: float = Field(
        default=168, gt=0, description="how long accepted events are kept for `nps ingest replay` (personal data)"
    )
    replay_groups: list[str] = Field(
        default=["nps-scoring", "nps-followup", "nps-delivery", "nps-scoring-themes", "nps-scoring-rates"],
        description="the consumer groups of the responses topic the replay watermark follows (JSON list)",
    )
    replay_invitation_groups: list[str] = Field(
        default=["nps-scoring-rates"],
        description="the consumer groups of the invitations topic the replay watermark follows (JSON list)",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="processes serving ingest's port (one per core; each its own database pool and Kafka producer; "
        "rate limits are per process)",
    )
    # Publishable keys serve a whole site, so the per-key limit does not apply to them: these do.
    public_rate_per_address_s: float = Field(
        default=20, ge=0, description="with a publishable key: requests per second from one client address (0: off)"
    )
    public_burst_per_address: float = Field(
        default=40, ge=1, description="with a publishable key: a client address's burst"
    )
    public_rate_per_respondent_s: float = Field(
        default=1, ge=0, description="with a publishable key: responses per second for one respondent_id (0: off)"
    )
    public_burst_per_respondent: float = Field(
        default=5, ge=1, description="with a publishable key: one person's burst"
    )
    # GET /v1/prompt (ingest_service/prompt.py): whether a widget shows a person the prompt now.
    survey_min_days: float = Field(
        default=90, ge=0, description="GET /v1/prompt: not again within this many days of the person's last answer"
    )
    prompt_gap_days: float = Field(
        default=7,
        ge=0,
        description="GET /v1/prompt: not again within this many days of their last invitation or prompt shown "
        "(answered or not)",
    )
    prompt_samples: dict[str, float] = Field(
        default={},
        description='GET /v1/prompt: per survey id, the share of people shown its prompt (JSON, {"q4": 0.25}); a '
        "publishable key's --sample wins; default everyone",
    )
    sample_period_days: int = Field(
        default=30, ge=1, le=366, description="a sampled person stays in (or out) for a period of this many days"
    )
    contact_group_id: str = Field(
        default="nps-ingest-contact",
        description="the consumer group that mirrors follow-up's opt-outs (nps.contact.v1) for GET /v1/prompt",
    )
    replay_check_s: float = Field(default=5.0, gt=0, description="how often the replay watermark is advanced")
    replay_margin_s: float = Field(
        default=60.0,
        ge=0,
        description="a replay from the watermark starts this much earlier (clock skew, publishes in flight)",
    )

    @field_validator("prompt_samples")
    @classmethod
    def _shares(cls, samples: dict[str, float]) -> dict[str, float]:
        for survey, share in samples.items():
            if not 0 < share <= 1:
                raise ValueError(f"the share of survey {survey!r} is {share}: give 0 < share <= 1")
        return samples

    @property
    def replay_margin(self) -> timedelta:
        return timedelta(seconds=self.replay_margin_s)
