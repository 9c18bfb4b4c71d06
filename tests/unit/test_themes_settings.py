"""Themes' settings are NPS_THEMES_*; scoring's names it read before are still read for one release,
with a warning naming the new one."""

from __future__ import annotations

import logging

import pytest

from themes_service.settings import ThemesSettings

SECRET = "s" * 32


def test_its_own_names_are_read_and_win(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NPS_THEMES_DIMENSIONS", "product,region")
    monkeypatch.setenv("NPS_SCORING_DIMENSIONS", "plan")
    monkeypatch.setenv("NPS_THEMES_RETENTION_DAYS", "400")
    with caplog.at_level(logging.WARNING):
        settings = ThemesSettings(pseudonym_secret=SECRET)
    assert settings.dimensions == "product,region" and settings.retention_days == 400
    assert not caplog.records


def test_an_old_name_alone_is_read_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NPS_SCORING_HOST", "0.0.0.0")
    monkeypatch.setenv("NPS_SCORING_MAX_VALUES_PER_DIMENSION", "7")
    with caplog.at_level(logging.WARNING):
        settings = ThemesSettings(pseudonym_secret=SECRET)
    assert settings.host == "0.0.0.0" and settings.max_values_per_dimension == 7
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "NPS_THEMES_HOST" in warned and "NPS_THEMES_MAX_VALUES_PER_DIMENSION" in warned


def test_scoring_s_own_settings_are_read_quietly_and_its_port_never(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NPS_SCORING_WINDOWS", "7d,30d,180d")  # themes checks its retention against these
    monkeypatch.setenv("NPS_SCORING_PORT", "1234")
    monkeypatch.setenv("NPS_SCORING_GROUP_ID", "nps-scoring-b")
    with caplog.at_level(logging.WARNING):
        settings = ThemesSettings(pseudonym_secret=SECRET)
    assert settings.windows == "7d,30d,180d" and not caplog.records
    assert settings.port == 8005 and settings.group_id == "nps-scoring-themes"


def test_a_bad_retention_names_themes_own_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NPS_THEMES_RETENTION_DAYS", "30")
    with pytest.raises(ValueError, match="NPS_THEMES_RETENTION_DAYS=30 is shorter"):
        ThemesSettings(pseudonym_secret=SECRET)
