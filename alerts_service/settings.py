from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class AlertSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NPS_ALERTS_", env_file=".env", extra="ignore")

    port: int = 8003
    group_id: str = "nps-alerts"
    # Fire when the current window's NPS is at least this many points below the baseline's...
    drop_points: float = Field(default=10.0, gt=0)
    # ...and both windows hold at least this many responses (no alerts on samples of twelve).
    min_responses: int = Field(default=30, ge=1)
