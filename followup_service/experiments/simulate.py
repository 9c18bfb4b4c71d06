"""`nps experiments simulate`: populations with regression to the mean built in and a known true
effect, run through the service's own estimators (`estimators.effect_of`, `anytime`,
`results.is_decided`: not a re-implementation), and how often their intervals are right. Seeded:
the same seed prints the same table.

The population. Each person has a lasting satisfaction mu ~ Normal(8.3, 1.5); each answer is
mu + noise (Normal(0, 1.7)) rounded and clipped to 0..10: 47% promoters, 21% detractors (NPS 25). A detractor's first answer is often a bad
day: asked again, with nothing done, 59% of them are no longer detractors (regression to the mean;
the study the issue cites saw 56% at six weeks). The model's exact share is in the table.

The experiment. Every day `per_day` people answer; the detractors (the rule: a ticket, held out at
the scenario's share) are assigned to an arm by weight. A share of everyone answers again after a
uniform delay. Treatment: a treated detractor whose next answer would not be a promoter moves up
one category with probability p, so the true effect, in NPS points of contribution, is
100 p P(next answer not a promoter | first a detractor), worked out exactly by integrating over mu
(not estimated): p is set from the effect wanted.

The naive comparison, as GET /v1/outcomes makes it: the change of those followed up (treated
detractors) minus the change of everyone else who answered again (held-out detractors, and the
passives and promoters the rule did not follow up, who regress down)."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from followup_service.experiments import estimators, results
from followup_service.experiments.estimators import Moments, Pair
from shared.simtable import Row, simulate_command

SATISFACTION = statistics.NormalDist(8.3, 1.5)
NOISE = statistics.NormalDist(0, 1.7)


def score(mu: float, rng: random.Random) -> int:
    return min(10, max(0, round(mu + rng.gauss(0, NOISE.stdev))))


def value(s: int) -> int:
    return estimators.contribution(s)


def _at_most(k: int, mu: float) -> float:
    """P(an answer <= k | mu)."""
    return 1.0 if k >= 10 else NOISE.cdf(k + 0.5 - mu)


def _grid(points: int = 4_001) -> list[tuple[float, float]]:
    low, high = SATISFACTION.mean - 7 * SATISFACTION.stdev, SATISFACTION.mean + 7 * SATISFACTION.stdev
    step = (high - low) / (points - 1)
    return [(low + i * step, SATISFACTION.pdf(low + i * step) * step) for i in range(points)]


def among_detractors(k: int) -> float:
    """P(the next answer <= k | the first was a detractor), exactly (a fine grid over mu)."""
    grid = _grid()
    first = [w * _at_most(6, mu) for mu, w in grid]
    return sum(f * _at_most(k, mu) for f, (mu, _) in zip(first, grid, strict=True)) / sum(first)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    effect: float  # the true effect among re-surveyed detractors, in NPS points
    per_day: int = 100  # people answering a first time each day (about 20% detractors)
    days: int = 180
    weights: tuple[float, float] = (0.5, 0.5)  # treated, held out
    answer_again: float = 0.5  # the share who answer again
    delay: tuple[int, int] = (30, 90)  # days until they do


@dataclass(slots=True)
class Run:
    """One simulated experiment, read every day."""

    estimate: estimators.Estimate | None  # the effect on the last day
    anytime: estimators.Estimate | None
    cuped: estimators.Estimate | None
    first_decided: int | None  # the first day the confidence sequence decided (None: never)
    first_fixed: int | None  # the first day the fixed interval excluded zero (reading it daily)
    naive: float | None  # followed up minus not, on the last day
    treated_change: float | None  # the followed-up people's own before/after change


def bump_chance(effect: float, not_promoter: float) -> float:
    p = effect / (100 * not_promoter)
    if not 0 <= p <= 1:
        raise ValueError(f"an effect of {effect} points is out of this population's reach")
    return p


def simulate(scenario: Scenario, seed: int, not_promoter: float) -> Run:
    rng = random.Random(seed)
    p = bump_chance(scenario.effect, not_promoter)
    # by day: (group, the first answer's score, the next answer's contribution)
    arrivals: list[list[tuple[str, int, int]]] = [[] for _ in range(scenario.days + 1)]
    for day in range(scenario.days):
        for _ in range(scenario.per_day):
            mu = rng.gauss(SATISFACTION.mean, SATISFACTION.stdev)
            first = score(mu, rng)
            if rng.random() >= scenario.answer_again:
                continue  # nobody learns how they moved
            again = day + rng.randint(*scenario.delay)
            if again > scenario.days:
                continue
            after = value(score(mu, rng))
            if first <= 6:
                group = "treated" if rng.random() < scenario.weights[0] else "held_out"
                if group == "treated" and after < 100 and rng.random() < p:
                    after += 100
            else:
                group = "others"
            arrivals[again].append((group, first, after))
    moments = {"treated": Moments(), "held_out": Moments(), "others": Moments()}
    pairs: dict[str, list[Pair]] = {"treated": [], "held_out": []}
    first_decided = first_fixed = None
    fixed = anytime = None
    for day, arrived in enumerate(arrivals):
        for group, first, after in arrived:
            moments[group].add(after - value(first))
            if group != "others":
                pairs[group].append(Pair(value(first), after, first))
        if not arrived:
            continue
        fixed = estimators.effect_of(moments["treated"], moments["held_out"])
        anytime = estimators.anytime(fixed) if fixed is not None else None
        n_t, n_c = moments["treated"].n, moments["held_out"].n
        if first_decided is None and results.is_decided(anytime, n_t, n_c):
            first_decided = day
        if first_fixed is None and results.is_decided(fixed, n_t, n_c):
            first_fixed = day
    rest = _merged(moments["held_out"], moments["others"])
    naive = estimators.effect_of(moments["treated"], rest)
    return Run(
        fixed,
        anytime,
        estimators.cuped(pairs["treated"], pairs["held_out"]),
        first_decided,
        first_fixed,
        naive.points if naive else None,
        moments["treated"].mean if moments["treated"].n else None,
    )


def _merged(a: Moments, b: Moments) -> Moments:
    """Two samples' moments as one (Chan et al.)."""
    n = a.n + b.n
    if n == 0:
        return Moments()
    delta = b.mean - a.mean
    return Moments(n, a.mean + delta * b.n / n, a.m2 + b.m2 + delta * delta * a.n * b.n / n)


@dataclass(frozen=True, slots=True)
class Size:
    runs: int  # per true effect, for coverage and the false-decision rate
    seed_runs: int  # of the seed scenario


PUBLISH = Size(runs=500, seed_runs=200)
QUICK = Size(runs=40, seed_runs=20)
EFFECTS = (0.0, 5.0, 15.0)
# The seed scenario (docs/experiments.md): ~6,000 answers a month, a fifth of detractors held out, a
# quarterly-ish re-survey that 40% answer; follow-up truly adds 15 points among re-surveyed detractors.
SEED = Scenario("SaaS: 200 answers a day, 20% of detractors held out, 40% answer again 60-120 days later",
                effect=15.0, per_day=200, weights=(0.8, 0.2), answer_again=0.4, delay=(60, 120))  # fmt: skip


def _share(hits: int, n: int) -> str:
    return f"{hits / n:.3f} ({hits} of {n})"


def _covered(estimates: Sequence[estimators.Estimate], effect: float) -> str:
    return _share(sum(1 for e in estimates if e.low <= effect <= e.high), len(estimates))


def _width(estimates: Sequence[estimators.Estimate]) -> float:
    return statistics.fmean(e.high - e.low for e in estimates)


def _bias(values: Sequence[float], effect: float) -> str:
    return f"{statistics.fmean(values):.1f} ({statistics.fmean(values) - effect:+.1f})"


def _decided(runs: Sequence[Run]) -> str:
    days = [r.first_decided for r in runs if r.first_decided is not None]
    return f"{_share(len(days), len(runs))} / {statistics.median(days) if days else 'never'}"


def run(seed: int, size: Size) -> list[Row]:
    not_promoter = among_detractors(8)
    moved = f"{1 - among_detractors(6):.3f}"
    rows = [Row("population", "detractors who are no longer detractors when asked again, nothing done", moved)]
    for effect in EFFECTS:
        name = f"true effect {effect:g} points, 100 a day, 50/50, 180 days"
        scenario = Scenario(name, effect)
        runs = [simulate(scenario, seed * 1_000_003 + int(effect) * 10_007 + i, not_promoter) for i in range(size.runs)]
        fixed = [r.estimate for r in runs if r.estimate is not None]
        anytime = [r.anytime for r in runs if r.anytime is not None]
        cuped = [r.cuped for r in runs if r.cuped is not None]
        coverage = sum(1 for e in fixed if e.low <= effect <= e.high) / len(fixed)
        rows += [
            Row(name, "coverage of the 95% interval (day 180)", _covered(fixed, effect), ">= 0.93", coverage >= 0.93),
            Row(name, "coverage of the anytime interval (day 180)", _covered(anytime, effect)),
            Row(name, "coverage of the CUPED 95% interval (day 180)", _covered(cuped, effect)),
            Row(name, "mean width: 95% / CUPED / anytime (points)",
                f"{_width(fixed):.1f} / {_width(cuped):.1f} / {_width(anytime):.1f}"),
            Row(name, "naive followed-up-minus-not: mean estimate (bias)",
                _bias([r.naive for r in runs if r.naive is not None], effect)),
            Row(name, "followed-up people's own change: mean (bias)",
                _bias([r.treated_change for r in runs if r.treated_change is not None], effect)),
        ]  # fmt: skip
        if effect == 0:
            decided = sum(1 for r in runs if r.first_decided is not None)
            at_fixed = sum(1 for r in runs if r.first_fixed is not None)
            rows += [
                Row(name, "false 'decided', read every day for 180 days (anytime interval)",
                    _share(decided, len(runs)), "<= 0.05", decided / len(runs) <= 0.05),
                Row(name, "false 'decided', read every day (the fixed 95% interval)",
                    _share(at_fixed, len(runs)), "far above 0.05 expected"),
            ]  # fmt: skip
        else:
            rows.append(Row(name, "decided by day 180 / median day first decided", _decided(runs)))
    return rows + seed_rows(seed, size, not_promoter)


def seed_rows(seed: int, size: Size, not_promoter: float) -> list[Row]:
    one = simulate(SEED, seed, not_promoter)
    rows = []
    if one.estimate is not None and one.anytime is not None:
        rows.append(Row(SEED.name, f"one run (seed {seed}): estimate at day 180, 95% / anytime interval",
                        f"{one.estimate.points:.1f} [{one.estimate.low:.1f}, {one.estimate.high:.1f}] / "
                        f"[{one.anytime.low:.1f}, {one.anytime.high:.1f}]; true 15"))  # fmt: skip
        rows.append(Row(SEED.name, f"one run (seed {seed}): first decided",
                        "never" if one.first_decided is None else f"day {one.first_decided}"))  # fmt: skip
    runs = [simulate(SEED, seed * 7_919 + i, not_promoter) for i in range(size.seed_runs)]
    rows.append(Row(SEED.name, f"over {len(runs)} runs: decided by day 180 / median day first decided", _decided(runs)))
    naive = [r.naive for r in runs if r.naive is not None]
    rows.append(Row(SEED.name, "naive followed-up-minus-not, mean", f"{statistics.fmean(naive):.1f}; true 15"))
    return rows


def main(seed: int, quick: bool, write: str | None) -> int:
    """`nps experiments simulate`: print the table; with `write`, put it between the markers in that file."""
    size = QUICK if quick else PUBLISH
    return simulate_command("nps experiments simulate", lambda: run(seed, size), seed, quick, write)
