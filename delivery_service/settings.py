from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

# Standard Webhooks' suggested schedule (Svix's): after the first attempt, 5 s, 5 min, 30 min, 2 h,
# 5 h, 10 h, 10 h: eight attempts over about 27.5 hours.
DEFAULT_SCHEDULE: list[float] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000]


class DeliverySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NPS_DELIVERY_", env_file=".env", extra="ignore")

    port: int = Field(default=8004, description="delivery's HTTP port (the webhooks API)")
    group_id: str = Field(default="nps-delivery", description="delivery's consumer group")
    allow_private_urls: bool = Field(
        default=False,
        description="let subscriptions call http:// URLs and loopback, private, link-local addresses (tests, a "
        "laptop); off in production: only https:// to public addresses, checked again at every connection",
    )
    retry_schedule_s: list[float] = Field(
        default_factory=lambda: list(DEFAULT_SCHEDULE),
        description="seconds before each retry after a failed attempt (JSON list; each waits ±20% at random); "
        "past the last, the delivery fails. Default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about a day)",
    )
    disable_after_s: float = Field(
        default=5 * 86_400,
        gt=0,
        description="a subscription whose every attempt failed for this long is disabled (audit log, metric, "
        "error log); 410 Gone disables it at once",
    )
    connect_timeout_s: float = Field(default=2.0, gt=0, description="connecting to an endpoint")
    timeout_s: float = Field(default=10.0, gt=0, description="a whole attempt: connect, send, the answer's head")
    per_endpoint_concurrency: int = Field(
        default=16, ge=1, le=1_000, description="attempts in flight at once to one subscription"
    )
    lease_s: float = Field(
        default=60.0,
        gt=0,
        description="a claimed delivery not recorded within this long (the worker died) is attempted again, "
        "with the same webhook-id; longer than timeout_s",
    )
    poll_s: float = Field(default=0.1, gt=0, description="how often the worker looks for due deliveries when idle")
    refresh_s: float = Field(default=1.0, gt=0, description="how soon a changed subscription takes effect")
    retention_days: float = Field(
        default=30, gt=0, description="delivered and failed deliveries (and their attempts) are kept this long"
    )
    public_api_url: str | None = Field(
        default=None,
        description="where people reach the loop's APIs (e.g. https://nps.example.com): Slack messages link to "
        "the ticket or alert there",
    )

    @field_validator("retry_schedule_s")
    @classmethod
    def _positive(cls, schedule: list[float]) -> list[float]:
        if any(s <= 0 for s in schedule):
            raise ValueError("every retry delay must be more than 0 seconds")
        return schedule

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> DeliverySettings:
        if self.lease_s <= self.timeout_s:
            raise ValueError(
                f"NPS_DELIVERY_LEASE_S ({self.lease_s}) must be longer than NPS_DELIVERY_TIMEOUT_S ({self.timeout_s}): "
                "a delivery still being attempted would be claimed again"
            )
        return self
