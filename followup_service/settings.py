from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class FollowUpSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NPS_FOLLOWUP_", env_file=".env", extra="ignore")

    port: int = 8002
    group_id: str = "nps-followup"
