from __future__ import annotations

from functools import cached_property

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from scoring_service.domain import Dimensions
from shared.settings import ServiceSettings
from shared.windows import parse_window


class ScoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NPS_SCORING_", env_file=".env", extra="ignore")

    port: int = Field(default=8001, description="scoring's HTTP port")
    group_id: str = Field(default="nps-scoring", description="scoring's consumer group")
    current_days: int = Field(default=7, ge=1, description="the current window carried by every `ScoreChanged`")
    baseline_days: int = Field(
        default=28, ge=1, description="the baseline window (the days before the current one) in every `ScoreChanged`"
    )
    dimensions: str = Field(
        default="channel,survey_id,*",
        description="the single dimensions responses are counted by, comma-separated (`*`: every attribute key)",
    )
    combinations: str = Field(
        default="", description="combined dimensions, comma-separated, e.g. `product+region,plan+region`"
    )
    max_values_per_dimension: int = Field(
        default=1_000, ge=1, description="past this many values of one dimension, new values count under `other`"
    )
    score_event_days: int = Field(
        default=84,
        ge=1,
        le=366,
        description="days of counts each `ScoreChanged` carries in `daily` (at least both windows): alerts' rules "
        "read 84 (the EWMA's 28-day reference and 56 monitored days)",
    )
    score_event_interval_s: float = Field(
        default=1.0, gt=0, description="at most one `ScoreChanged` per segment per this many seconds"
    )
    significance: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="the one-sided p-value below which `/v1/nps/compare` calls a drop significant",
    )
    windows: str = Field(default="7d,30d,90d", description="the rolling windows `/v1/nps/windows` answers together")

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
