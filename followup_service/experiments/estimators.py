"""The numbers an experiment's results are made of (issue 38), pure: each re-surveyed person's NPS
contribution (+100 promoter, 0 passive, -100 detractor) at the answer that assigned them (x) and at
their next answer (y).

- An arm's change: the mean of y - x, with a 95% interval.
- An arm's effect against control: the difference of their mean changes (Welch's standard error).
  Comparing changes, not levels, takes regression to the mean out of the effect: it moves both arms.
- CUPED (Deng et al. 2013): y - theta (x - mean x), x the assigning answer's score, theta = Cov(y, x) /
  Var(x) over both arms: the same effect in expectation, with the variance the score explains removed.
- Power: re-surveyed people per arm needed to see an effect with 80% power at a two-sided 5% level.

- The anytime-valid interval: a confidence sequence (Howard, Ramdas, McAuliffe, Sekhon 2021, the
  two-sided normal-mixture boundary), which may be read every day: the chance that it ever, at any
  look, misses the true effect is at most 5% (asymptotically, with the variance estimated). The
  other intervals are fixed-horizon ones: valid at one planned look, and labelled so.

The normal mixture: for a sum S of n terms of variance s^2, with V = n s^2 and mixing precision rho,
|S| <= sqrt((V + rho) log((V + rho) / (rho alpha^2))) at every n with probability >= 1 - alpha. For
the mean, with rho = N0 s^2 (the boundary is tightest near n ~ N0 people): radius = se *
sqrt((1 + N0/n) log((1 + n/N0) / alpha^2))."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054
Z80 = 0.8416212335729143


def contribution(score: int) -> int:
    """A person's part in NPS, in points: +100 a promoter (9-10), -100 a detractor (0-6), 0 a passive."""
    if not 0 <= score <= 10:
        raise ValueError(f"score {score} is not 0..10")
    return 100 if score >= 9 else -100 if score <= 6 else 0


@dataclass(frozen=True, slots=True)
class Pair:
    """One re-surveyed person: their contribution at the assigning answer and at the next one, and
    the assigning answer's score (0-10; CUPED's covariate: it tells apart a 0 from a 6)."""

    before: int
    after: int
    score: int | None = None  # None: CUPED adjusts for `before`


@dataclass(frozen=True, slots=True)
class Estimate:
    points: float
    low: float
    high: float
    n: int


def _interval(points: float, se: float, n: int) -> Estimate:
    return Estimate(points, points - Z95 * se, points + Z95 * se, n)


@dataclass(slots=True)
class Moments:
    """A sample's count, mean and sum of squared deviations, kept as values arrive (Welford): what
    the intervals need, so a reader who looks every day (the simulator) adds each value once."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        moments = cls()
        for value in values:
            moments.add(value)
        return moments

    @property
    def variance(self) -> float:
        return self.m2 / (self.n - 1) if self.n >= 2 else math.nan


def _variance(values: Sequence[float]) -> float:
    return statistics.variance(values) if len(values) >= 2 else math.nan


def change(pairs: Sequence[Pair]) -> Estimate | None:
    """The arm's mean change of contribution; None below two people (no interval)."""
    return change_of(Moments.of(p.after - p.before for p in pairs))


def change_of(deltas: Moments) -> Estimate | None:
    if deltas.n < 2:
        return None
    return _interval(deltas.mean, math.sqrt(deltas.variance / deltas.n), deltas.n)


def effect(treated: Sequence[Pair], control: Sequence[Pair]) -> Estimate | None:
    """The treated arm's mean change less the control's, with Welch's standard error."""
    return effect_of(Moments.of(p.after - p.before for p in treated), Moments.of(p.after - p.before for p in control))


def effect_of(treated: Moments, control: Moments) -> Estimate | None:
    """`effect` from each arm's moments of the change."""
    if treated.n < 2 or control.n < 2:
        return None
    se = math.sqrt(treated.variance / treated.n + control.variance / control.n)
    return _interval(treated.mean - control.mean, se, treated.n + control.n)


def cuped(treated: Sequence[Pair], control: Sequence[Pair]) -> Estimate | None:
    """The effect with each outcome y (the next answer's contribution) adjusted for the assigning
    answer's score x: y - theta (x - mean x)."""
    if len(treated) < 2 or len(control) < 2:
        return None
    everyone = [*treated, *control]
    xs = [_covariate(p) for p in everyone]
    ys = [float(p.after) for p in everyone]
    spread = _variance(xs)
    theta = statistics.covariance(xs, ys) / spread if spread > 0 else 0.0
    centre = statistics.fmean(xs)
    a = [p.after - theta * (_covariate(p) - centre) for p in treated]
    c = [p.after - theta * (_covariate(p) - centre) for p in control]
    se = math.sqrt(_variance(a) / len(a) + _variance(c) / len(c))
    return _interval(statistics.fmean(a) - statistics.fmean(c), se, len(a) + len(c))


def _covariate(pair: Pair) -> float:
    return float(pair.score if pair.score is not None else pair.before)


def needed_per_arm(sd: float, effect_points: float) -> int:
    """People per arm for 80% power at a two-sided 5% level: 2 (z.975 + z.8)^2 sd^2 / effect^2."""
    if effect_points <= 0 or sd <= 0:
        raise ValueError("the effect and the standard deviation must be positive")
    return math.ceil(2 * (Z95 + Z80) ** 2 * sd * sd / (effect_points * effect_points))


# Where the confidence sequence is tightest, in re-surveyed people (both arms). Any fixed value keeps
# it valid; this one suits the volumes the simulator's seed scenario sees (hundreds per arm).
N0 = 400
ALPHA = 0.05


def anytime_radius(se: float, n: int, n0: float = N0, alpha: float = ALPHA) -> float:
    """The confidence sequence's half-width at n people (its standard error `se`)."""
    if n <= 0:
        raise ValueError("no people, no interval")
    return se * math.sqrt((1 + n0 / n) * math.log((1 + n / n0) / (alpha * alpha)))


def anytime(estimate: Estimate) -> Estimate:
    """The same estimate with the confidence sequence's interval instead of the fixed one."""
    se = (estimate.high - estimate.low) / (2 * Z95)
    radius = anytime_radius(se, estimate.n)
    return Estimate(estimate.points, estimate.points - radius, estimate.points + radius, estimate.n)
