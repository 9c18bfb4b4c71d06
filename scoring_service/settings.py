from __future__ import annotations

from functools import cached_property

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from scoring_service.domain import Dimensions
from shared.settings import ServiceSettings
from shared.windows import parse_window


class ScoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NPS_SCORING_", env_file=".env", extra="ignore")

    port: int = 8001
    group_id: str = "nps-scoring"
    # The windows carried by every ScoreChanged event (what alerts compare).
    current_days: int = Field(default=7, ge=1)
    baseline_days: int = Field(default=28, ge=1)
    # What responses are counted by: single dimensions ('*' = every attribute key) and
    # combinations ('product+region'; a multiplication sign works too), each a comma-separated list.
    dimensions: str = "channel,survey_id,*"
    combinations: str = ""
    # Past this many values of one dimension (or combination), new values count under 'other'.
    max_values_per_dimension: int = Field(default=1_000, ge=1)
    # At most one ScoreChanged per segment per this many seconds.
    score_event_interval_s: float = Field(default=1.0, gt=0)
    # GET /v1/nps/compare calls a drop significant below this one-sided p-value.
    significance: float = Field(default=0.05, gt=0, lt=1)
    # The rolling windows GET /v1/nps/windows answers together (any Nd works in GET /v1/nps).
    windows: str = "7d,30d,90d"

    @model_validator(mode="after")
    def _dimensions_parse(self) -> ScoringSettings:
        Dimensions.parse(self.dimensions, self.combinations)  # a typo fails at start-up, not per event
        if not self.rolling_windows:
            raise ValueError("NPS_SCORING_WINDOWS names no window")
        for window in self.rolling_windows:
            parse_window(window)
        return self

    @property
    def rolling_windows(self) -> list[str]:
        return [w.strip() for w in self.windows.split(",") if w.strip()]

    @cached_property
    def segment_dimensions(self) -> Dimensions:
        return Dimensions.parse(self.dimensions, self.combinations)
