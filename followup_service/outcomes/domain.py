"""Is following up working? When a person answers again, the move from their previous answer's
category to the new one is recorded with the follow-up the previous answer got (or that it got
none: suppressed, failed, or no rule). Pure: the report from the counts of those transitions.

The NPS change of a group is the mean, over its people, of (new value - previous value) where a
promoter is +1, a passive 0 and a detractor -1: a paired difference, in points, with a normal 95%
interval; groups are compared as independent samples."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from followup_service.routing.matching import CATEGORY_NAMES, CategoryName
from shared.nps import Z95, classify

VALUE: dict[CategoryName, int] = {"promoter": 1, "passive": 0, "detractor": -1}
NOT_FOLLOWED_UP = "none"  # the group of answers whose follow-up was suppressed, failed, or no rule


class Transition(NamedTuple):
    """A person answered again: what they moved from and to, and what their previous answer got.
    A named tuple: it is the row `followup.transitions` gets, as it is (its fields are the columns)."""

    response_id: str
    respondent_key: str
    previous_response_id: str
    previous_category: CategoryName
    new_category: CategoryName
    days_between: float
    followup_kind: str
    followup_status: str
    ticket_resolved_before: bool | None  # None: the previous answer had no ticket
    answered_at: datetime
    channel: str | None
    survey_id: str | None


def group_of(kind: str, status: str) -> str:
    return kind if status == "created" and kind != "none" else NOT_FOLLOWED_UP


def category_of(score: int) -> CategoryName:
    return CATEGORY_NAMES[classify(score)]


@dataclass(frozen=True, slots=True)
class Cell:
    group: str
    before: CategoryName
    after: CategoryName
    n: int


@dataclass(frozen=True, slots=True)
class Share:
    n: int  # how many could move (e.g. detractors before)
    moved: int
    share: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class Change:
    n: int
    points: float | None  # mean NPS change, in points
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class GroupOutcome:
    group: str
    resurveyed: int
    detractors_up: Share  # detractor -> passive or promoter
    passives_up: Share  # passive -> promoter
    nps_change: Change


@dataclass(frozen=True, slots=True)
class Report:
    groups: list[GroupOutcome]
    followed_up: Change
    not_followed_up: Change
    difference: Change  # followed up minus not, in points


def wilson(moved: int, n: int, z: float = Z95) -> Share:
    if n == 0:
        return Share(0, 0, None, None, None)
    p = moved / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Share(n, moved, round(p, 4), round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def _moments(cells: Iterable[Cell]) -> tuple[int, float, float]:
    """n, the mean of (after - before), and the variance of that mean."""
    values = [(VALUE[c.after] - VALUE[c.before], c.n) for c in cells]
    n = sum(k for _, k in values)
    if n == 0:
        return 0, 0.0, 0.0
    mean = sum(d * k for d, k in values) / n
    variance = sum(k * (d - mean) ** 2 for d, k in values) / (n - 1) if n > 1 else 0.0
    return n, mean, variance / n


def paired(cells: Iterable[Cell], z: float = Z95) -> Change:
    """Mean of (after - before) in points over the people in `cells`, with a 95% interval."""
    n, mean, variance = _moments(cells)
    if n == 0:
        return Change(0, None, None, None)
    half = z * math.sqrt(variance)
    return Change(n, round(100 * mean, 2), round(100 * (mean - half), 2), round(100 * (mean + half), 2))


def difference(a: list[Cell], b: list[Cell], z: float = Z95) -> Change:
    """Mean change of `a` minus that of `b`, in points, as independent samples."""
    n_a, mean_a, var_a = _moments(a)
    n_b, mean_b, var_b = _moments(b)
    if n_a == 0 or n_b == 0:
        return Change(n_a + n_b, None, None, None)
    points = round(100 * mean_a, 2) - round(100 * mean_b, 2)
    half = 100 * z * math.sqrt(var_a + var_b)
    return Change(n_a + n_b, round(points, 2), round(points - half, 2), round(points + half, 2))


def report(cells: Iterable[Cell]) -> Report:
    cells = list(cells)
    groups = sorted({c.group for c in cells})
    outcomes = []
    for group in groups:
        mine = [c for c in cells if c.group == group]
        detractors = [c for c in mine if c.before == "detractor"]
        passives = [c for c in mine if c.before == "passive"]
        outcomes.append(
            GroupOutcome(
                group=group,
                resurveyed=sum(c.n for c in mine),
                detractors_up=wilson(
                    sum(c.n for c in detractors if c.after != "detractor"), sum(c.n for c in detractors)
                ),
                passives_up=wilson(sum(c.n for c in passives if c.after == "promoter"), sum(c.n for c in passives)),
                nps_change=paired(mine),
            )
        )
    followed = [c for c in cells if c.group != NOT_FOLLOWED_UP]
    not_followed = [c for c in cells if c.group == NOT_FOLLOWED_UP]
    return Report(outcomes, paired(followed), paired(not_followed), difference(followed, not_followed))
