"""The simulators' tables (`nps alerts simulate`, `nps experiments simulate`): rows of a measure,
its value and target, written between markers in the doc that publishes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    measure: str
    value: str
    target: str = ""
    met: bool | None = None


def table(rows: Sequence[Row]) -> str:
    lines = ["| scenario | measure | value | target | met |", "|---|---|---|---|---|"]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.scenario} | {row.measure} | {row.value} | {row.target} | {met} |")
    return "\n".join(lines)


BEGIN, END = "<!-- simulate:begin -->", "<!-- simulate:end -->"


def write_table(path: Path, rows: Sequence[Row], stamp: str) -> bool:
    """Replace what is between the markers in `path` with `stamp` and the table; False without markers."""
    doc = path.read_text()
    if BEGIN not in doc or END not in doc:
        return False
    head, rest = doc.split(BEGIN, 1)
    path.write_text(f"{head}{BEGIN}\n{stamp}\n\n{table(rows)}\n{END}{rest.split(END, 1)[1]}")
    return True
