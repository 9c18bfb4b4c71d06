"""Themes' settings: NPS_THEMES_*. It counts by scoring's rules, so it has scoring's settings too
(the segment dimensions, their cap and the retention must equal scoring's: set both)."""

from __future__ import annotations

import logging
import os
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from scoring_service.settings import ScoringSettings

log = logging.getLogger(__name__)

OWN_PREFIX = "NPS_THEMES_"
OLD_PREFIX = "NPS_SCORING_"
# Scoring's settings themes reads only to check its retention against the windows scoring serves:
# scoring's to set, read from NPS_SCORING_* as they are (no warning).
SCORING_ONLY = frozenset(
    {"current_days", "baseline_days", "score_event_days", "score_event_interval_s", "significance", "windows",
     "metric_segments"}
)  # fmt: skip
# Named NPS_THEMES_* from the start: never read under scoring's prefix.
ALWAYS_OWN = frozenset({"port", "group_id", "consumer_instance_id", "taxonomy"})


class ScoringNames(PydanticBaseSettingsSource):
    """Until themes had settings of its own it read scoring's (NPS_SCORING_*). A setting given only
    under its old name is still read, for one release, with a warning naming the new one."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if field.validation_alias is not None or name in ALWAYS_OWN:
                continue  # named by an alias of its own (DATABASE_URL, NPS_CONSUMER_*): no prefix
            old, new = f"{OLD_PREFIX}{name.upper()}", f"{OWN_PREFIX}{name.upper()}"
            if old not in os.environ or new in os.environ:
                continue
            found[name] = os.environ[old]
            if name not in SCORING_ONLY:
                log.warning("themes read %s: set %s instead (the old name goes in the next release)", old, new)
        return found


class ThemesSettings(ScoringSettings):
    model_config = SettingsConfigDict(env_prefix=OWN_PREFIX, env_file=".env", extra="ignore")

    port: int = Field(default=8005, description="themes' HTTP port")
    group_id: str = Field(
        default="nps-scoring-themes",
        description="themes' consumer group (its committed offsets: keep it when upgrading)",
    )
    metric_window: str = Field(default="7d", description="the rolling window of the `nps_theme_*` gauges")
    metric_interval_s: float = Field(default=30.0, gt=0, description="how often the `nps_theme_*` gauges are read")
    taxonomy: str | None = Field(
        default=None,
        description="the theme taxonomy (YAML; docs/themes.md); default: the one shipped "
        "(themes_service/default_themes.yaml)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # NPS_THEMES_* first; scoring's names only where those are not set.
        return init_settings, env_settings, ScoringNames(settings_cls), dotenv_settings, file_secret_settings
