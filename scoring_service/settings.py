from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ScoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NPS_SCORING_", env_file=".env", extra="ignore")

    port: int = 8001
    group_id: str = "nps-scoring"
    # The windows carried by every ScoreChanged event (what alerts compare).
    current_days: int = 7
    baseline_days: int = 28
