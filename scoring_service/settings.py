from __future__ import annotations

from datetime import date
from functools import cached_property
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from scoring_service.domain import Dimensions, parse_segment
from shared.settings import ServiceSettings
from shared.windows import parse_window, retention_cutoff

MAX_METRIC_SEGMENTS = 50


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
    metric_segments: str = Field(
        default="all",
        description="the segments whose NPS, 95% interval and responses scoring exports to Prometheus "
        "(`nps_segment_*{segment=...}`), separated by `;` (a combination holds commas: `all; channel:web; "
        f"product:atlas,region:eu`); at most {MAX_METRIC_SEGMENTS}, each a label value, so never more than you name",
    )
    retention_days: int = Field(
        default=0,
        ge=0,
        description="keep counts of the last N days of answers (0: forever). Scoring and themes then ignore "
        "events answered before the cutoff, and `nps scoring prune` deletes what lies before it; at least the "
        "longest window the services read (windows, current + baseline, the ScoreChanged days, the metric window)",
    )
    metric_window: str = Field(default="7d", description="the rolling window of the `nps_segment_*` gauges")
    rates_group_id: str | None = Field(
        default=None,
        description="the consumer group that counts response rates (reads the invitations and responses topics); "
        "default: scoring's group with `-rates` (nps-scoring-rates)",
    )
    match_window_days: float = Field(
        default=14,
        gt=0,
        le=366,
        description="a response without an invitation_id answers the person's latest invitation to its survey "
        "sent at most this many days before it",
    )
    rates_invitations_first_s: float = Field(
        default=30.0,
        ge=0,
        description="while the invitations topic is behind, the rates loop reads it first and pauses the responses "
        "topic, for at most this long at a time (then both, until the invitations have caught up); an answer "
        "counted before its invitation is matched again when it comes, so a backlog of both is ~1.3x faster "
        "this way. 0 reads both topics together",
    )
    metric_interval_s: float = Field(default=30.0, gt=0, description="how often the `nps_segment_*` gauges are read")
    consumers: list[Literal["counts", "rates"]] = Field(
        default=["counts", "rates"],
        description="the consumer loops this process runs (JSON list): `counts` (the scores, group_id) and `rates` "
        '(the response rates, rates_group_id). Both by default; `["counts"]` in one deployment and '
        '`["rates"]` in another give each a process (and a core) of its own, as the rates loop costs the '
        "counts ~40% of their rate when they share one. Every process serves the whole query API",
    )

    @field_validator("consumers")
    @classmethod
    def _some_consumers(cls, consumers: list[str]) -> list[str]:
        if not consumers:
            raise ValueError('name at least one: ["counts"], ["rates"] or ["counts", "rates"]')
        if len(set(consumers)) < len(consumers):
            raise ValueError(f"a consumer named twice: {consumers}")
        return consumers

    @property
    def rates_group(self) -> str:
        return self.rates_group_id or f"{self.group_id}-rates"

    @property
    def prefix(self) -> str:
        """The environment variables' prefix of these settings (themes' differ from scoring's)."""
        return str(self.model_config.get("env_prefix", ""))

    @model_validator(mode="after")
    def _dimensions_parse(self) -> ScoringSettings:
        Dimensions.parse(self.dimensions, self.combinations)  # a typo fails at start-up, not per event
        if not self.rolling_windows:
            raise ValueError(f"{self.prefix}WINDOWS names no window")
        for window in self.rolling_windows:
            parse_window(window)
        parse_window(self.metric_window)
        if self.retention_days and self.retention_days < self.longest_window_days:
            raise ValueError(
                f"{self.prefix}RETENTION_DAYS={self.retention_days} is shorter than the {self.longest_window_days} "
                "days the services read (NPS_SCORING_WINDOWS, current + baseline days, score_event_days, metric "
                "window)"
            )
        segments = self._named_segments  # each must be a segment the API would answer
        if len(segments) > MAX_METRIC_SEGMENTS:
            raise ValueError(
                f"NPS_SCORING_METRIC_SEGMENTS names {len(segments)} segments; at most {MAX_METRIC_SEGMENTS} "
                "(each is a Prometheus label value): pick the ones a dashboard shows"
            )
        for segment in segments:
            try:
                parse_segment(segment, self.segment_dimensions)
            except ValueError as exc:
                raise ValueError(f"NPS_SCORING_METRIC_SEGMENTS: {segment!r}: {exc}") from None
        return self

    @property
    def longest_window_days(self) -> int:
        return max(
            *(parse_window(w) for w in self.rolling_windows),
            self.current_days + self.baseline_days,
            self.score_event_days,
            parse_window(self.metric_window),
        )

    def retention_cutoff(self, today: date) -> date | None:
        """The first day kept, or None when everything is kept."""
        return retention_cutoff(today, self.retention_days)

    @property
    def _named_segments(self) -> list[str]:
        return [s.strip() for s in self.metric_segments.split(";") if s.strip()]

    @property
    def gauge_segments(self) -> list[str]:
        """The configured segments, as storage keys, each once."""
        return list(dict.fromkeys(parse_segment(s, self.segment_dimensions) for s in self._named_segments))

    @property
    def rolling_windows(self) -> list[str]:
        return [w.strip() for w in self.windows.split(",") if w.strip()]

    @cached_property
    def segment_dimensions(self) -> Dimensions:
        return Dimensions.parse(self.dimensions, self.combinations)
