"""`make bench`, section `widget`: the web widget's scripts as ingest serves them (clients/web/build.py),
their bytes and gzipped bytes against the 8 KiB budget. No infrastructure: the build is plain text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine, verdict, write_section
from clients.web.build import BUDGET_GZIPPED, SCRIPTS, build, gzipped, version


def write_widget_report() -> Path:
    built = build()
    lines = [
        "## The web widget's size",
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, {machine()}. `python -m bench --only widget`: widget {version()} as "
        "ingest serves it (`/widget/nps.js`, `/widget/nps.mjs`), gzipped at level 9.",
        "",
        "| script | bytes | gzipped | target | met |",
        "|---|---|---|---|---|",
    ]
    for name in SCRIPTS:
        size = gzipped(built[name])
        print(f"  widget    {name:8} {len(built[name]):>7,} bytes, {size:>6,} gzipped")
        lines.append(
            f"| `{name}` | {len(built[name]):,} | {size:,} | ≤ {BUDGET_GZIPPED:,} | {verdict(size <= BUDGET_GZIPPED)} |"
        )
    return write_section("widget", lines)
