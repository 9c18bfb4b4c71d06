from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from scoring_service.settings import ScoringSettings


class ThemesSettings(ScoringSettings):
    """Scoring's settings (NPS_SCORING_*: the dimensions, combinations and cap, so themes count the
    same segments), and the themes process's own (NPS_THEMES_*)."""

    model_config = SettingsConfigDict(env_prefix="NPS_SCORING_", env_file=".env", extra="ignore")

    port: int = Field(default=8005, validation_alias="NPS_THEMES_PORT", description="themes' HTTP port")
    group_id: str = Field(
        default="nps-scoring-themes", validation_alias="NPS_THEMES_GROUP_ID", description="themes' consumer group"
    )
    consumer_instance_id: str | None = Field(
        default=None,
        validation_alias="NPS_THEMES_CONSUMER_INSTANCE_ID",
        description="themes' static group member id (see NPS_SCORING_CONSUMER_INSTANCE_ID)",
    )
    taxonomy: str | None = Field(
        default=None,
        validation_alias="NPS_THEMES_TAXONOMY",
        description="the theme taxonomy (YAML; docs/themes.md); default: the one shipped "
        "(themes_service/default_themes.yaml)",
    )
