"""NPS arithmetic: the one definition every service uses. Pure: no I/O, no clock.

Score 0..10; promoter 9-10, passive 7-8, detractor 0-6. NPS = 100 * (P - D) / N.
Intervals and tests use the adjusted Wald method (Rocks 2016, The American Statistician):
add 3 responses, 3/4 of them promoters and 3/4 detractors, which keeps the interval honest
for small samples and for scores near +-100.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

Z95 = 1.959963984540054  # two-sided 95% normal quantile


class Category(StrEnum):
    PROMOTER = "promoter"
    PASSIVE = "passive"
    DETRACTOR = "detractor"


def classify(score: int) -> Category:
    """Bucket a score. Anything but an int 0..10 is an error, never silently bucketed."""
    if isinstance(score, bool) or not isinstance(score, int):
        raise TypeError(f"score must be an int, got {type(score).__name__}")
    if not 0 <= score <= 10:
        raise ValueError(f"score must be 0..10, got {score}")
    if score >= 9:
        return Category.PROMOTER
    if score >= 7:
        return Category.PASSIVE
    return Category.DETRACTOR


@dataclass(frozen=True, slots=True)
class Counts:
    promoters: int = 0
    passives: int = 0
    detractors: int = 0

    @classmethod
    def of(cls, category: Category) -> Counts:
        return cls(
            promoters=int(category is Category.PROMOTER),
            passives=int(category is Category.PASSIVE),
            detractors=int(category is Category.DETRACTOR),
        )

    @classmethod
    def from_scores(cls, scores: list[int]) -> Counts:
        total = cls()
        for score in scores:
            total = total + cls.of(classify(score))
        return total

    @classmethod
    def total(cls, many: Iterable[Counts]) -> Counts:
        """The sum of `many`, in one pass (`sum(many, Counts())` makes an object per term)."""
        promoters = passives = detractors = 0
        for counts in many:
            promoters += counts.promoters
            passives += counts.passives
            detractors += counts.detractors
        return cls(promoters, passives, detractors)

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.promoters + other.promoters,
            self.passives + other.passives,
            self.detractors + other.detractors,
        )

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.promoters - other.promoters,
            self.passives - other.passives,
            self.detractors - other.detractors,
        )

    @property
    def n(self) -> int:
        return self.promoters + self.passives + self.detractors

    def by_category(self) -> tuple[tuple[str, int], ...]:
        """(name, count) of each category, as metric labels and APIs name them."""
        return (("promoter", self.promoters), ("passive", self.passives), ("detractor", self.detractors))

    @property
    def nps(self) -> float | None:
        """NPS in points (-100..100); None when there are no responses."""
        if self.n == 0:
            return None
        return 100.0 * (self.promoters - self.detractors) / self.n

    @property
    def variance(self) -> float | None:
        """Variance of NPS as a fraction: [p + d - (p - d)^2] / n."""
        if self.n == 0:
            return None
        p = self.promoters / self.n
        d = self.detractors / self.n
        return (p + d - (p - d) ** 2) / self.n


@dataclass(frozen=True, slots=True)
class Adjusted:
    """Adjusted-Wald values, as fractions: NPS' and its variance V'."""

    nps: float
    variance: float


def adjusted(counts: Counts) -> Adjusted:
    n_adj = counts.n + 3
    p_adj = (counts.promoters + 0.75) / n_adj
    d_adj = (counts.detractors + 0.75) / n_adj
    nps_adj = p_adj - d_adj
    return Adjusted(nps=nps_adj, variance=(p_adj + d_adj - nps_adj**2) / n_adj)


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


def ci95(counts: Counts, z: float = Z95) -> Interval:
    """Adjusted-Wald 95% interval in NPS points, clipped to the possible range -100..100.

    Defined for n = 0 too (it is then wide, about -100..100), so callers never divide by zero.
    """
    adj = adjusted(counts)
    half = z * math.sqrt(adj.variance)
    return Interval(
        low=max(-100.0, 100.0 * (adj.nps - half)),
        high=min(100.0, 100.0 * (adj.nps + half)),
    )


@dataclass(frozen=True, slots=True)
class Comparison:
    """Current period against a baseline period, both independent samples."""

    difference: float  # NPS'(current) - NPS'(baseline), in points
    z: float
    p_value_drop: float  # one-sided: P(Z <= z) under "no change"

    def significant_drop(self, significance: float) -> bool:
        """The current period is lower, and a drop this large is unlikely (p < significance) by chance."""
        return self.difference < 0 and self.p_value_drop < significance


def compare(baseline: Counts, current: Counts) -> Comparison:
    """z = (NPS'2 - NPS'1) / sqrt(V'1 + V'2) with the adjusted values: a two-sample z test on the
    adjusted-Wald estimates (Rocks 2016), which holds its error rate at small n where plain Wald does not."""
    b = adjusted(baseline)
    c = adjusted(current)
    z = (c.nps - b.nps) / math.sqrt(b.variance + c.variance)
    return Comparison(difference=100.0 * (c.nps - b.nps), z=z, p_value_drop=normal_cdf(z))


def normal_cdf(x: float) -> float:
    """Phi(x), through erfc so the lower tail keeps its precision (Phi(-10) is 7.6e-24, not 0)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


# --- response rates: a proportion (responded of invited) ---


@dataclass(frozen=True, slots=True)
class Rate:
    invited: int
    responded: int

    @property
    def rate(self) -> float | None:
        return self.responded / self.invited if self.invited else None

    def __add__(self, other: Rate) -> Rate:
        return Rate(self.invited + other.invited, self.responded + other.responded)


NO_INVITATIONS = Rate(0, 0)


def compare_rates(baseline: Rate, current: Rate) -> Comparison:
    """The two-proportion z test with the pooled proportion: z = (p2 - p1) / sqrt(p(1 - p)(1/n1 +
    1/n2)), `difference` in percentage points. Both need invitations; a pooled rate of 0 or 1 (every
    invitation answered, or none) is no difference: z = 0."""
    if baseline.invited <= 0 or current.invited <= 0:
        raise ValueError("both periods need invitations")
    p1, p2 = baseline.responded / baseline.invited, current.responded / current.invited
    pooled = (baseline.responded + current.responded) / (baseline.invited + current.invited)
    spread = pooled * (1.0 - pooled) * (1.0 / baseline.invited + 1.0 / current.invited)
    z = (p2 - p1) / math.sqrt(spread) if spread > 0 else 0.0
    return Comparison(difference=100.0 * (p2 - p1), z=z, p_value_drop=normal_cdf(z))


def wilson95(successes: int, n: int, z: float = Z95) -> Interval | None:
    """The Wilson score 95% interval of a proportion, in 0..1 (None when n = 0: no rate). Unlike the
    plain Wald interval it stays inside 0..1 and keeps its coverage at small n and rates near 0 or 1,
    which response rates of small segments are."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes of {n}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At 0 or n the bound is exactly 0 or 1; computed, it is a rounding away (0.9999999999999999).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low=low, high=high)
