"""docs/configuration.md is generated from the settings classes; this fails when it is stale."""

from __future__ import annotations

from services import configdoc
from shared.settings import InfraSettings


def test_the_configuration_reference_is_current() -> None:
    assert configdoc.PATH.read_text() == configdoc.render(), "run `make docs` and commit docs/configuration.md"


def test_every_setting_is_in_the_reference_with_a_meaning() -> None:
    text = configdoc.render()
    for variable in (
        "DATABASE_URL",
        "NPS_INGEST_RATE_LIMIT_BURST",
        "NPS_SCORING_WINDOWS",
        "NPS_ALERTS_DROP_MIN_RESPONSES",
    ):
        assert f"`{variable}`" in text
    for cls in (InfraSettings, *(c for _, c in configdoc.SERVICES)):
        for name, info in cls.model_fields.items():
            assert info.description, f"{cls.__name__}.{name} has no description for docs/configuration.md"
