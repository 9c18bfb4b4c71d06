"""docs/configuration.md, generated from the settings classes, so the table cannot drift from the
code: `make docs` writes it, and a unit test fails when it is not current."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from alerts_service.settings import AlertSettings
from delivery_service.settings import DeliverySettings
from followup_service.settings import FollowUpSettings
from ingest_service.settings import IngestSettings
from scoring_service.settings import ScoringSettings
from services.launcher import LauncherSettings
from shared.settings import InfraSettings, ServiceSettings
from themes_service.settings import ThemesSettings

PATH = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

INTRO = """# Configuration

Every setting is an environment variable (or a line in `.env`). Each service reads one
pydantic-settings class: `shared/settings.py` for what every process shares, `*_service/settings.py`
for the rest. This file is generated from those classes by `make docs`; a unit test fails when it is
out of date. Invalid values stop a service at start-up with a message naming the variable.
"""


def variable(cls: type[BaseSettings], name: str, info: FieldInfo) -> str:
    if isinstance(info.validation_alias, str):
        return info.validation_alias
    return f"{cls.model_config.get('env_prefix', '')}{name}".upper()


def shown(value: Any) -> str:
    if value is None or value == "":
        return "(none)"
    if isinstance(value, Path):
        value = str(value)
    return f"`{value}`"


def table(cls: type[BaseSettings], names: list[str]) -> list[str]:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name in names:
        info = cls.model_fields[name]
        default = "see meaning" if info.default_factory is not None else shown(info.default)
        rows.append(f"| `{variable(cls, name, info)}` | {default} | {info.description or ''} |")
    return rows


SECTIONS: list[tuple[str, str, type[BaseSettings], list[str]]] = [
    (
        "Every process",
        "Where the database and the broker are, the topics, the logs. Unprefixed where the name is conventional.",
        InfraSettings,
        list(InfraSettings.model_fields),
    ),
    ("The launcher (`nps up`)", "", LauncherSettings, ["var_dir", "broker_port", "demo_port"]),
    (
        "Every consuming service",
        "Scoring, follow-up, alerts and delivery run the shared consumer loop with these.",
        ServiceSettings,
        [
            n
            for n, f in ServiceSettings.model_fields.items()
            if n not in InfraSettings.model_fields and f.validation_alias is not None
        ],
    ),
]
# Declared once for every service, read with each service's prefix (NPS_INGEST_PORT, NPS_SCORING_PORT, ...).
PER_SERVICE = [
    n
    for n, f in ServiceSettings.model_fields.items()
    if n not in InfraSettings.model_fields and f.validation_alias is None
]
SERVICES: list[tuple[str, type[BaseSettings]]] = [
    ("Ingest", IngestSettings),
    ("Scoring", ScoringSettings),
    ("Follow-up", FollowUpSettings),
    ("Alerts", AlertSettings),
    ("Delivery (webhooks)", DeliverySettings),
    (
        "Themes (`nps themes`; the segment settings and the retention must equal scoring's. Until the next "
        "release a variable given only under scoring's name, NPS_SCORING_*, is read too, with a warning)",
        ThemesSettings,
    ),
]
# What themes counts by, besides its own settings: scoring's rules, under its own names.
THEMES_COUNTING = ["dimensions", "combinations", "max_values_per_dimension", "retention_days", "metric_window",
                   "metric_interval_s"]  # fmt: skip


def render() -> str:
    lines = [INTRO]
    for title, text, cls, names in SECTIONS:
        lines += [f"## {title}", ""] + ([text, ""] if text else []) + table(cls, names) + [""]
    for title, cls in SERVICES:
        names = [*PER_SERVICE, *(n for n in cls.__annotations__ if n in cls.model_fields and n not in PER_SERVICE)]
        if cls is ThemesSettings:  # scoring's settings it counts by, and a few of its own
            names = [*PER_SERVICE, *THEMES_COUNTING, *(n for n in cls.__annotations__ if n not in PER_SERVICE)]
        lines += [f"## {title}", "", *table(cls, names), ""]
    return "\n".join(lines)


def main() -> int:
    PATH.write_text(render())
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
