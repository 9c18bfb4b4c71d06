"""The simulators' tables (`nps alerts simulate`, `nps experiments simulate`): rows of a measure,
its value and target, written between markers in the doc that publishes them."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Sequence
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


def simulate_command(
    command: str, run: Callable[[], Sequence[Row]], seed: int, quick: bool, write: str | None, stamp_tail: str = ""
) -> int:
    """A simulator's command (`nps alerts simulate`, `nps experiments simulate`): print the table
    `run()` makes; with `write`, put it between the markers in that file, stamped with the command,
    the date, Python and how long it took."""
    started = time.monotonic()
    rows = run()
    print(table(rows))
    elapsed = time.monotonic() - started
    print(f"\n{len(rows)} measures, seed {seed}, {'quick' if quick else 'publishing'} size, {elapsed:.0f} s")
    if write:
        stamp = (
            f"`{command} --seed {seed}` on {time.strftime('%Y-%m-%d')}, {platform.python_implementation()} "
            f"{platform.python_version()}, {elapsed:.0f} s{stamp_tail}:"
        )
        if not write_table(Path(write), rows, stamp):
            print(f"{write} has no {BEGIN} ... {END} markers", file=sys.stderr)
            return 2
    return 0  # a target missed is a finding to publish, not a failed command
