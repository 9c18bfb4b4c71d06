"""The detection rules: pure functions from counts to a verdict, with the numbers that explain it.

Each rule answers per segment `Verdict(condition, p_value, ...)` or None ("too little data to say
either way": the state machine then leaves the alert as it is). The same functions run in the
service and in the simulator (`alerts_service/simulate.py`), so the published error rates are the
service's own.

- drop: current window vs baseline window, one-sided adjusted-Wald z test (shared/nps.compare, the
  test /v1/nps/compare uses), significant after Benjamini-Hochberg across the round's segments AND
  at least `min_drop_points` lower AND `min_responses` on each side.
- ewma: an EWMA of each complete day's NPS (each day weighted by its n) against the mean of a
  reference period before it; fires below mu0 - L * sd.
- incident: detractors among the last `hours` of arrivals vs the baseline's detractor share, exact
  binomial upper tail, with a minimum count.
- silence: no arrival for `multiple` times the segment's usual gap (and at least `min_silence`).
- response_rate: the response rate of the invitations of the drop rule's current window against
  those of its baseline, both windows ending `settle_days` before today (a younger invitation's
  answer may still come), one-sided two-proportion z test (shared/nps.compare_rates), significant
  after Benjamini-Hochberg across the round's segments at the drop rule's q AND at least
  `min_drop_points` lower AND the drop rule's `min_responses` invitations on each side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import get_args

from shared.events import AlertRule
from shared.nps import Counts, Rate, compare, compare_rates, normal_cdf

RULES: tuple[str, ...] = get_args(AlertRule)  # the contract names them: drop, ewma, incident, silence, response_rate


@dataclass(frozen=True, slots=True)
class DropRule:
    enabled: bool = True
    current_days: int = 7
    baseline_days: int = 28
    min_drop_points: float = 5.0  # practical significance: a 2-point "significant" drop pages nobody
    min_responses: int = 30
    # The false discovery rate held across one round's segments. 0.10, the team's choice between two
    # targets that conflict at 0.05 (issue 38): power 0.88 within 7 days for a 10-point drop at ~400
    # per window, with ~0.02 false drop alerts per segment per 30 days (docs/alerts.md's table).
    q: float = 0.10


@dataclass(frozen=True, slots=True)
class EwmaRule:
    enabled: bool = True
    lam: float = 0.2
    # One-sided lower limit. With lam 0.2, L 3.0 the in-control average run length of a one-sided
    # EWMA of independent normal days is ~1,100 days (docs/alerts.md: how it was measured).
    limit: float = 3.0
    reference_days: int = 28  # the in-control mean and variance: the days before the monitored ones
    monitored_days: int = 56  # complete days, up to yesterday: one look a day, as the run length counts
    min_reference: int = 100  # responses the reference period needs (the warm-up)


@dataclass(frozen=True, slots=True)
class IncidentRule:
    enabled: bool = True
    minutes: int = 60  # how far back "recent" reaches
    min_detractors: int = 10
    # Per-test level: one segment is tested every minute on overlapping windows, ~3 independent
    # looks an hour; 1e-5 keeps false incidents near 0.02 per segment per 30 days (docs/alerts.md).
    alpha: float = 1e-5


@dataclass(frozen=True, slots=True)
class SilenceRule:
    enabled: bool = True
    # Poisson arrivals: P(gap > k usual gaps) = e^-k per gap; on a weekend (0.625 of the usual volume)
    # 20 gaps are 12.5 of its own: ~4e-6 per gap. Nights are quieter still: raise min_silence if yours stop.
    multiple: float = 20.0
    min_silence: timedelta = timedelta(hours=6)
    min_baseline: int = 56  # "normally receives responses": at least two a day in the baseline


@dataclass(frozen=True, slots=True)
class RateRule:
    """Survey fatigue, or a broken invitation: the response rate fell. Its windows, minimum count
    (of invitations) and false discovery rate are the drop rule's."""

    enabled: bool = True
    # Both windows end this many days before today: an invitation sent yesterday reads answered
    # less often only because its answers are still coming. 4: with an email survey's delays the
    # simulator's stable rate gave 0.030 false alerts per segment a month at q 0.10, 0.052 with 3.
    settle_days: int = 4
    min_drop_points: float = 5.0  # percentage points of the rate: 2 points "significant" pages nobody


@dataclass(frozen=True, slots=True)
class Rules:
    drop: DropRule = DropRule()
    ewma: EwmaRule = EwmaRule()
    incident: IncidentRule = IncidentRule()
    silence: SilenceRule = SilenceRule()
    response_rate: RateRule = RateRule()

    def enabled(self) -> list[str]:
        return [name for name in RULES if getattr(self, name).enabled]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One rule's answer for one segment. `condition`: the alert's condition holds now."""

    condition: bool
    statistic: float | None = None  # z for drop, the EWMA's standardised distance for ewma, ...
    p_value: float | None = None
    q_value: float | None = None  # drop only: the BH-adjusted p-value across the round
    drop_points: float | None = None


# --- drop (and response_rate: the same test of a proportion) ---


@dataclass(frozen=True, slots=True)
class DropTest:
    z: float
    p_value: float
    drop_points: float  # baseline - current, plain (not adjusted) points: of NPS, or of the response rate


def drop_test(current: Counts, baseline: Counts, rule: DropRule) -> DropTest | None:
    """None when either window has fewer than `min_responses`: no verdict."""
    if current.n < rule.min_responses or baseline.n < rule.min_responses:
        return None
    comparison = compare(baseline, current)
    assert current.nps is not None and baseline.nps is not None
    return DropTest(z=comparison.z, p_value=comparison.p_value_drop, drop_points=baseline.nps - current.nps)


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """BH-adjusted p-values (q-values), in the input's order: q_(i) = min_{j>=i} p_(j) * m / j,
    capped at 1. Rejecting every q <= alpha is the BH step-up procedure at level alpha."""
    m = len(p_values)
    order = sorted(range(m), key=p_values.__getitem__)
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        index = order[rank - 1]
        running = min(running, p_values[index] * m / rank)
        adjusted[index] = running
    return adjusted


def rate_test(current: Rate, baseline: Rate, rule: DropRule) -> DropTest | None:
    """None when either window has fewer than the drop rule's `min_responses` invitations."""
    if current.invited < rule.min_responses or baseline.invited < rule.min_responses:
        return None
    comparison = compare_rates(baseline, current)
    return DropTest(z=comparison.z, p_value=comparison.p_value_drop, drop_points=-comparison.difference)


def drop_round(
    tests: Sequence[DropTest | None], rule: DropRule, min_points: float | None = None
) -> list[Verdict | None]:
    """The drop rule over one round: BH across the segments that had a verdict (the response-rate
    rule's round too, with its own `min_points`)."""
    min_points = rule.min_drop_points if min_points is None else min_points
    tested = [t for t in tests if t is not None]
    q_values = iter(benjamini_hochberg([t.p_value for t in tested]))
    out: list[Verdict | None] = []
    for test in tests:
        if test is None:
            out.append(None)
            continue
        q = next(q_values)
        condition = q <= rule.q and test.drop_points >= min_points
        out.append(Verdict(condition, statistic=test.z, p_value=test.p_value, q_value=q, drop_points=test.drop_points))
    return out


# --- ewma ---


@dataclass(frozen=True, slots=True)
class Ewma:
    mean: float  # the reference's NPS, points
    value: float  # the EWMA after the last monitored day, points
    lower_limit: float  # points


def ewma(days: Sequence[Counts], rule: EwmaRule) -> Ewma | None:
    """`days`: the reference days then the monitored days, oldest first, one Counts per day.
    Each day's weight follows its n: lam_t = 1 - (1 - lam)^(n_t / n_ref_day), so a typical day
    weighs lam, today's first few responses almost nothing, and a quiet weekend less than a
    Monday. z_t = lam_t x_t + (1 - lam_t) z_{t-1} (x_t the day's NPS), z_0 = mu0;
    Var(z_t) = lam_t^2 sigma^2 / n_t + (1 - lam_t)^2 Var(z_{t-1}), plus the reference mean's own
    sigma^2 / n_ref. None until the reference holds `min_reference` responses."""
    monitored = ((d.promoters, d.passives, d.detractors) for d in days[rule.reference_days :])
    return ewma_of(Counts.total(days[: rule.reference_days]), monitored, rule)


def ewma_of(reference: Counts, monitored: Iterable[tuple[int, int, int]], rule: EwmaRule) -> Ewma | None:
    """`ewma` from the reference days' sum and the monitored days' (promoters, passives,
    detractors), oldest first (days with none may be left out: they change nothing)."""
    if reference.n < rule.min_reference:
        return None
    p, d = reference.promoters / reference.n, reference.detractors / reference.n
    mu0 = p - d
    sigma2 = max(p + d - mu0 * mu0, 1.0 / reference.n)  # never 0: an all-promoter reference still varies
    per_day = reference.n / rule.reference_days
    log_keep = math.log1p(-rule.lam) if rule.lam < 1 else -math.inf
    z, var = mu0, 0.0
    for promoters, passives, detractors in monitored:
        n = promoters + passives + detractors
        if n == 0:
            continue
        lam = 1.0 - math.exp(log_keep * n / per_day)
        keep = 1.0 - lam
        z = lam * (promoters - detractors) / n + keep * z
        var = lam * lam * sigma2 / n + keep * keep * var
    sd = math.sqrt(var + sigma2 / reference.n)
    return Ewma(mean=100.0 * mu0, value=100.0 * z, lower_limit=100.0 * (mu0 - rule.limit * sd))


def ewma_verdict(result: Ewma | None, rule: EwmaRule) -> Verdict | None:
    if result is None:
        return None
    sd = (result.mean - result.lower_limit) / rule.limit
    statistic = (result.value - result.mean) / sd if sd > 0 else 0.0
    return Verdict(
        result.value < result.lower_limit,
        statistic=statistic,
        p_value=normal_cdf(statistic),
        drop_points=result.mean - result.value,
    )


# --- incident ---


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed term by term in log space from the near end."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)

    def term(i: int) -> float:
        return math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)

    if k > n * p:  # the upper tail is the small side: sum it outward until the terms vanish
        total, i = 0.0, k
        while i <= n:
            t = term(i)
            total += t
            if t < total * 1e-16:
                break
            i += 1
        return min(1.0, total)
    lower, i = 0.0, k - 1  # the lower side is small: 1 - P(X <= k - 1)
    while i >= 0:
        t = term(i)
        lower += t
        if t < lower * 1e-16:
            break
        i -= 1
    return max(0.0, 1.0 - lower)


def incident_verdict(recent: Counts, baseline: Counts, rule: IncidentRule) -> Verdict | None:
    """Too few recent detractors is not "no incident" for certain, but it is no page: condition False."""
    if baseline.n == 0 or recent.n == 0:
        return None
    share = (baseline.detractors + 0.5) / (baseline.n + 1)  # never 0: one detractor is not infinitely surprising
    p_value = binomial_upper_tail(recent.detractors, recent.n, share)
    expected = recent.n * share
    statistic = (recent.detractors - expected) / math.sqrt(expected * (1 - share))
    condition = recent.detractors >= rule.min_detractors and p_value < rule.alpha
    return Verdict(condition, statistic=statistic, p_value=p_value)


# --- silence ---


def usual_gap(baseline: Counts, baseline_days: int) -> timedelta | None:
    if baseline.n == 0:
        return None
    return timedelta(days=baseline_days) / baseline.n


def silence_verdict(
    last_arrival: datetime | None, baseline: Counts, baseline_days: int, now: datetime, rule: SilenceRule
) -> Verdict | None:
    gap = usual_gap(baseline, baseline_days)
    if gap is None or last_arrival is None or baseline.n < rule.min_baseline:
        return None
    silent = now - last_arrival
    threshold = max(gap * rule.multiple, rule.min_silence)
    # P(no arrival for `silent`) under the baseline's Poisson rate
    p_value = math.exp(-silent / gap) if silent > timedelta(0) else 1.0
    return Verdict(silent >= threshold, statistic=silent / gap, p_value=p_value)


# --- what an alert says about itself ---


@dataclass(frozen=True, slots=True)
class Contribution:
    segment: str
    points: float  # what this part moved the parent's NPS by, points (negative: pulled it down)
    current_n: int
    baseline_n: int
    current_nps: float | None
    baseline_nps: float | None


def contributions(
    parent_current: Counts,
    parent_baseline: Counts,
    children: dict[str, tuple[Counts, Counts]],
    top: int = 3,
) -> list[Contribution]:
    """Each child's share of the parent's change: (P - D)/N of the parent is the sum over a partition
    of (P_c - D_c)/N, so a child moved the parent by (P_c - D_c)/N_cur - (P_c' - D_c')/N_base.
    The children of one dimension partition the parent; those of different dimensions overlap, so
    the list names the biggest movers, not a sum."""
    if parent_current.n == 0 or parent_baseline.n == 0:
        return []
    out = []
    for segment, (current, baseline) in children.items():
        moved = 100.0 * (
            (current.promoters - current.detractors) / parent_current.n
            - (baseline.promoters - baseline.detractors) / parent_baseline.n
        )
        out.append(Contribution(segment, round(moved, 2), current.n, baseline.n, current.nps, baseline.nps))
    out.sort(key=lambda c: (c.points, c.segment))
    return [c for c in out[:top] if c.points < 0]
