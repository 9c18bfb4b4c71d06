"""An experiment's results, from its arms' people (issue 38). Pure: per arm, the change of the
re-surveyed people's NPS contribution; each other arm's effect against control, with a fixed 95%
interval, the anytime-valid one (the confidence sequence, which decides) and CUPED; the naive
followed-up-vs-not comparison beside it; and how many people the experiment still needs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from followup_service.experiments import estimators
from followup_service.experiments.estimators import Estimate, Moments, Pair
from followup_service.experiments.spec import Arm

# An effect is decided only once each arm has this many re-surveyed people: below it the estimated
# variance is too rough for the (asymptotic) confidence sequence to hold.
MIN_PER_ARM = 20
DEFAULT_EFFECT_POINTS = 5.0


@dataclass(frozen=True, slots=True)
class ArmPeople:
    """An arm's people: how many were assigned, and each re-surveyed person's contribution (+100,
    0, -100) at the assigning answer and at their next one, with when they answered again."""

    arm: str
    assigned: int
    first_assigned: datetime | None
    pairs: list[tuple[int, int, datetime, int]]  # before, after, answered again at, the assigning score


@dataclass(frozen=True, slots=True)
class ArmResult:
    arm: str
    weight: float
    action: str
    assigned: int
    resurveyed: int
    change: Estimate | None


@dataclass(frozen=True, slots=True)
class EffectResult:
    arm: str
    against: str
    effect: Estimate | None
    anytime: Estimate | None
    cuped: Estimate | None
    decided: bool


@dataclass(frozen=True, slots=True)
class Power:
    effect_points: float
    needed_per_arm: int | None  # None: no spread measured yet
    have_per_arm: int
    enough_by: date | None  # None: already enough, or no pace to go by yet


@dataclass(frozen=True, slots=True)
class Results:
    arms: list[ArmResult]
    effects: list[EffectResult]
    naive: Estimate | None  # followed up minus not, as the outcomes report compares them
    power: Power


def _pairs(people: ArmPeople | None) -> list[Pair]:
    return [Pair(before, after, score) for before, after, _, score in people.pairs] if people else []


def results(
    arms: Sequence[Arm],
    control: str,
    people: Mapping[str, ArmPeople],
    today: date,
    effect_points: float = DEFAULT_EFFECT_POINTS,
    naive: tuple[Moments, Moments] = (Moments(), Moments()),
) -> Results:
    """`naive`: the changes of the people followed up and of the rest (repository.naive_moments)."""
    pairs = {a.name: _pairs(people.get(a.name)) for a in arms}
    arm_results = [
        ArmResult(
            a.name,
            a.weight,
            a.action,
            people[a.name].assigned if a.name in people else 0,
            len(pairs[a.name]),
            estimators.change(pairs[a.name]),
        )
        for a in arms
    ]
    effects = []
    for a in arms:
        if a.name == control:
            continue
        fixed = estimators.effect(pairs[a.name], pairs[control])
        anytime = estimators.anytime(fixed) if fixed is not None else None
        decided = is_decided(anytime, len(pairs[a.name]), len(pairs[control]))
        effects.append(
            EffectResult(a.name, control, fixed, anytime, estimators.cuped(pairs[a.name], pairs[control]), decided)
        )
    followed, others = naive
    return Results(
        arm_results, effects, estimators.effect_of(followed, others), power(arms, people, pairs, today, effect_points)
    )


def is_decided(anytime: Estimate | None, treated: int, control: int) -> bool:
    """The confidence sequence excludes zero, and each arm has MIN_PER_ARM re-surveyed people."""
    return anytime is not None and min(treated, control) >= MIN_PER_ARM and (anytime.low > 0 or anytime.high < 0)


def power(
    arms: Sequence[Arm],
    people: Mapping[str, ArmPeople],
    pairs: Mapping[str, list[Pair]],
    today: date,
    effect_points: float,
) -> Power:
    """People per arm needed to see `effect_points` with 80% power (from the changes' spread so far),
    the smallest arm's count, and at its pace since the experiment's first assignment, when."""
    deltas = [p.after - p.before for arm in pairs.values() for p in arm]
    spread = statistics.stdev(deltas) if len(deltas) >= 2 else 0.0
    needed = estimators.needed_per_arm(spread, effect_points) if spread > 0 else None
    have = min((len(pairs[a.name]) for a in arms), default=0)
    starts = [p.first_assigned for p in people.values() if p.first_assigned is not None]
    enough_by = None
    if needed is not None and have < needed and starts and have > 0:
        days = max(1.0, (_at(today) - min(starts)).total_seconds() / 86_400)
        pace = have / days  # the smallest arm's re-surveyed people per day
        enough_by = today + timedelta(days=math.ceil((needed - have) / pace))
    return Power(effect_points, needed, have, enough_by)


def _at(day: date) -> datetime:
    """The end of `day`, UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
