from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class AlertSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NPS_ALERTS_", env_file=".env", extra="ignore")

    port: int = Field(default=8003, description="alerts' HTTP port")
    group_id: str = Field(default="nps-alerts", description="alerts' consumer group")
    drop_points: float = Field(
        default=10.0, gt=0, description="fire when the current window's NPS is this many points below the baseline's"
    )
    # No alerts on samples of twelve.
    min_responses: int = Field(default=30, ge=1, description="responses each window needs before any verdict")
