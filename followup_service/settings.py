from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class FollowUpSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NPS_FOLLOWUP_", env_file=".env", extra="ignore")

    port: int = Field(default=8002, description="follow-up's HTTP port")
    group_id: str = Field(default="nps-followup", description="follow-up's consumer group")
    outbox_interval_s: float = Field(
        default=1.0, gt=0, description="how soon a ticket change made through the API is published (`TicketUpdated`)"
    )
