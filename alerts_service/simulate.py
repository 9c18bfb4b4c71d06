"""`nps alerts simulate`: response streams with a known truth, run through the service's own
detection and state machine (`domain.evaluate_round`, not a re-implementation), and the error
rates that come out. Seeded: the same seed prints the same table.

Streams: Poisson arrivals (daily volume x a weekday factor, spread evenly over the day), each
response a promoter, passive or detractor with the truth's shares at that moment. Each segment has
`HISTORY_DAYS` of stable history before the measured span, so every rule is warmed up. A round is
evaluated every `round_minutes` (the service: every minute and on each ScoreChanged); the state
machine's `for` counts rounds, so with 15-minute rounds the simulator asks a condition to hold
for 45 minutes where the service asks 3: delays come out slightly longer than the service's.

Invitation streams (the response_rate rule): Poisson invitations a day (with the weekday factor),
each answered with the truth's rate at the moment it was sent, after a delay: half within the
hour, the rest exponential with a 2-day mean (an email survey's shape). A round sees only the
answers given by then: the youngest invitations read low, which is what the rule's `settle_days`
is for.
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from alerts_service.detection import Ewma, EwmaRule, Rules, drop_test, ewma, rate_test
from alerts_service.domain import RuleState, SegmentData, Timing, Transition, evaluate_round, round_windows
from shared.nps import Counts, Rate
from shared.simtable import Row, simulate_command

WEEKDAY = (1.15, 1.15, 1.15, 1.15, 1.15, 0.625, 0.625)  # Monday first; the mean is 1
STABLE = (0.5, 0.3, 0.2)  # NPS 30
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
Shares = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Truth:
    per_day: float  # mean responses a day
    shares: Callable[[datetime], Shares]  # promoter, passive, detractor shares at a moment


def stable(per_day: float) -> Truth:
    return Truth(per_day, lambda _at: STABLE)


def step_change(per_day: float, at: datetime, after: Shares) -> Truth:
    return Truth(per_day, lambda moment: after if moment >= at else STABLE)


def nps_shift(points: float) -> Shares:
    """STABLE moved by `points` of NPS: half from promoters, half to detractors."""
    p, pa, d = STABLE
    half = points / 200.0
    return (p + half, pa, d - half)


def poisson(rng: random.Random, mean: float) -> int:
    if mean > 50:  # normal approximation: exact enough for volume, and fast
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def draw(rng: random.Random, n: int, shares: Shares) -> tuple[int, int, int]:
    p_cut, pa_cut = shares[0], shares[0] + shares[1]
    promoters = passives = 0
    for _ in range(n):
        r = rng.random()
        if r < p_cut:
            promoters += 1
        elif r < pa_cut:
            passives += 1
    return promoters, passives, n - promoters - passives


@dataclass
class Stream:
    """One simulated segment: its finished days (with prefix sums for fast windows), today's
    counts so far, its recent arrivals and its last arrival."""

    name: str
    truth: Truth
    first_day: date
    days: list[Counts] = field(default_factory=list)
    prefix: list[tuple[int, int, int]] = field(default_factory=lambda: [(0, 0, 0)])
    today: list[int] = field(default_factory=lambda: [0, 0, 0])
    recent: deque[tuple[datetime, tuple[int, int, int]]] = field(default_factory=deque)
    last_arrival: datetime | None = None
    # The EWMA reads complete days only: the same all day long, worked out once a day (the rounds
    # come every few minutes).
    ewma_of_day: tuple[date, int, Ewma | None] | None = None

    def ewma(self, first: date, span: int, rule: EwmaRule) -> Ewma | None:
        """detection.ewma of the `span` complete days from `first`."""
        if self.ewma_of_day is None or self.ewma_of_day[:2] != (first, len(self.days)):
            a = (first - self.first_day).days
            self.ewma_of_day = (first, len(self.days), ewma(self.days[a : a + span], rule))
        return self.ewma_of_day[2]

    def close_day(self) -> None:
        counts = Counts(*self.today)
        self.days.append(counts)
        last = self.prefix[-1]
        self.prefix.append((last[0] + counts.promoters, last[1] + counts.passives, last[2] + counts.detractors))
        self.today = [0, 0, 0]

    def window(self, first: date, last: date) -> Counts:
        """Counts of the days first..last (last may be today, still open)."""
        a = min(max(0, (first - self.first_day).days), len(self.days))
        b = max(a, min(len(self.days), (last - self.first_day).days + 1))
        hi, lo = self.prefix[b], self.prefix[a]
        counts = Counts(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2])
        if (last - self.first_day).days >= len(self.days):
            counts = counts + Counts(*self.today)
        return counts


def history(rng: random.Random, stream: Stream, days: int) -> None:
    for offset in range(days):
        day = stream.first_day + timedelta(days=offset)
        moment = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        n = poisson(rng, stream.truth.per_day * WEEKDAY[day.weekday()])
        stream.today = list(draw(rng, n, stream.truth.shares(moment)))
        stream.close_day()
    stream.last_arrival = datetime(day.year, day.month, day.day, 23, 59, tzinfo=UTC)


@dataclass
class Outcome:
    fired: list[tuple[str, str, datetime]] = field(default_factory=list)  # rule, segment, when
    held: list[dict[str, list[str]]] = field(default_factory=list)  # per round, per rule


HISTORY_DAYS = 90


def simulate(
    truths: dict[str, Truth],
    start: datetime,
    end: datetime,
    rules: Rules,
    timing: Timing,
    seed: int,
    round_minutes: int = 15,
) -> Outcome:
    rng = random.Random(seed)
    first = start.date() - timedelta(days=HISTORY_DAYS)
    streams = [Stream(name, truth, first) for name, truth in truths.items()]
    for stream in streams:
        history(rng, stream, HISTORY_DAYS)
    states: dict[tuple[str, str], RuleState] = {}
    outcome = Outcome()
    step = timedelta(minutes=round_minutes)
    recent_span = timedelta(minutes=rules.incident.minutes)
    ewma_span = rules.ewma.reference_days + rules.ewma.monitored_days
    now = start
    while now < end:
        later = now + step
        if later.date() != now.date() and later.time() != datetime.min.time():
            raise ValueError("round_minutes must divide a day")
        for stream in streams:
            mean = stream.truth.per_day * WEEKDAY[now.weekday()] * round_minutes / 1440
            n = poisson(rng, mean)
            arrived = draw(rng, n, stream.truth.shares(now))
            if n:
                stream.today[0] += arrived[0]
                stream.today[1] += arrived[1]
                stream.today[2] += arrived[2]
                stream.recent.append((later, arrived))
                stream.last_arrival = now + step * rng.random() ** (1 / n)  # the latest of n uniform times
            while stream.recent and stream.recent[0][0] <= later - recent_span:
                stream.recent.popleft()
        if later.time() == datetime.min.time():
            for stream in streams:
                stream.close_day()
        today = (later - timedelta(microseconds=1)).date()
        windows = round_windows(today, rules)
        ewma_first = today - timedelta(days=ewma_span)  # complete days: up to yesterday
        data = []
        for stream in streams:
            recent = [sum(c[i] for _, c in stream.recent) for i in range(3)]
            current = stream.window(windows.current.first, windows.current.last)
            baseline = stream.window(windows.baseline.first, windows.baseline.last)
            data.append(
                SegmentData(
                    stream.name,
                    current,
                    baseline,
                    drop_test(current, baseline, rules.drop),
                    stream.ewma(ewma_first, ewma_span, rules.ewma),
                    Counts(*recent),
                    stream.last_arrival,
                )
            )
        result = evaluate_round(data, states, rules, windows, later, timing)
        for state in result.states:
            states[(state.rule, state.segment)] = state
        for change in result.changes:
            if change.transition is Transition.FIRED:
                outcome.fired.append((change.state.rule, change.state.segment, later))
        outcome.held.append(result.held)
        now = later
    return outcome


# --- invitations and the response rate ---


@dataclass(frozen=True, slots=True)
class RateTruth:
    per_day: float  # mean invitations a day
    rate: Callable[[datetime], float]  # the chance an invitation sent at that moment is answered


QUICK_SHARE, LATE_MEAN_DAYS = 0.5, 2.0  # half answered within the hour, the rest after ~2 days


@dataclass
class InvitationStream:
    """One simulated segment's invitations: per day sent, how many, and when each answer comes
    (hours after the day's start, sorted; answers never given are not in it)."""

    name: str
    truth: RateTruth
    first_day: date
    invited: list[int] = field(default_factory=list)
    answers: list[list[float]] = field(default_factory=list)

    def send_day(self, rng: random.Random) -> None:
        day = self.first_day + timedelta(days=len(self.invited))
        n = poisson(rng, self.truth.per_day * WEEKDAY[day.weekday()])
        times = []
        for _ in range(n):
            sent = rng.random() * 24.0
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=sent)
            if rng.random() < self.truth.rate(moment):
                late = rng.random() >= QUICK_SHARE
                times.append(sent + (rng.expovariate(1 / (24 * LATE_MEAN_DAYS)) if late else rng.random()))
        self.invited.append(n)
        self.answers.append(sorted(times))

    def rate(self, first: date, last: date, now: datetime) -> Rate:
        """The invitations of days first..last (all sent by `now`) and those answered by `now`."""
        invited = responded = 0
        for i in range(max(0, (first - self.first_day).days), min(len(self.invited), (last - self.first_day).days + 1)):
            day = self.first_day + timedelta(days=i)
            hours = (now - datetime(day.year, day.month, day.day, tzinfo=UTC)).total_seconds() / 3600
            invited += self.invited[i]
            responded += bisect.bisect_right(self.answers[i], hours)
        return Rate(invited, responded)


def simulate_rates(
    truths: dict[str, RateTruth],
    start: datetime,
    end: datetime,
    rules: Rules,
    timing: Timing,
    seed: int,
    round_minutes: int = 240,
) -> Outcome:
    """The response_rate rule alone (the other rules see no responses), a round every `round_minutes`."""
    rng = random.Random(seed)
    first = start.date() - timedelta(days=HISTORY_DAYS)
    streams = [InvitationStream(name, truth, first) for name, truth in truths.items()]
    states: dict[tuple[str, str], RuleState] = {}
    outcome = Outcome()
    now = start
    while now < end:
        now += timedelta(minutes=round_minutes)
        today = (now - timedelta(microseconds=1)).date()
        for stream in streams:  # every day up to today's, sent whole at its start (only answers wait)
            while len(stream.invited) <= (today - first).days:
                stream.send_day(rng)
        windows = round_windows(today, rules)
        assert windows.rates_current is not None and windows.rates_baseline is not None
        data = []
        for stream in streams:
            current = stream.rate(windows.rates_current.first, windows.rates_current.last, now)
            baseline = stream.rate(windows.rates_baseline.first, windows.rates_baseline.last, now)
            data.append(
                SegmentData(
                    stream.name, Counts(), Counts(), None, None, Counts(), None,
                    current, baseline, rate_test(current, baseline, rules.drop),
                )
            )  # fmt: skip
        result = evaluate_round(data, states, rules, windows, now, timing)
        for state in result.states:
            states[(state.rule, state.segment)] = state
        outcome.fired.extend(
            (c.state.rule, c.state.segment, now) for c in result.changes if c.transition is Transition.FIRED
        )
        outcome.held.append(result.held)
    return outcome


def rate_rows(seed: int, segments: int, days: int, rules: Rules, timing: Timing) -> list[Row]:
    """False response_rate alerts on a stable 20% (with the rule's settle_days, and without), and
    the power to find 20% -> 12% (fatigue, or a broken link), at ~400 invitations a week."""
    per_day, stable_rate = 400 / 7, 0.20
    rows = []
    for settle in (rules.response_rate.settle_days, 0):
        settled = replace(rules, response_rate=replace(rules.response_rate, settle_days=settle))
        truths = {_name(f"rate{settle}_", i): RateTruth(per_day, lambda _at: stable_rate) for i in range(segments)}
        outcome = simulate_rates(truths, START, START + timedelta(days=days), settled, timing, seed)
        per_30 = sum(1 for r, _, _ in outcome.fired if r == "response_rate") / (segments * days / 30)
        is_default = settle == rules.response_rate.settle_days
        rows.append(
            Row(
                f"null, rate 20%, ~400 invitations/week, settle {settle} days",
                "false response_rate alerts per segment per 30 days",
                f"{per_30:.3f}",
                "<= 0.05" if is_default else "",
                per_30 <= 0.05 if is_default else None,
            )
        )
    truths = {
        _name("ratedrop", i): RateTruth(per_day, lambda at: 0.12 if at >= START else stable_rate)
        for i in range(segments)
    }
    outcome = simulate_rates(truths, START, START + timedelta(days=21), rules, timing, seed + 1)
    first: dict[str, datetime] = {}
    for rule, segment, at in outcome.fired:
        if rule == "response_rate":
            first.setdefault(segment, at)
    power = len(first) / segments
    delays = sorted((at - START).total_seconds() / 86400 for at in first.values())
    label = "rate 20% -> 12%, ~400 invitations/week"
    return [
        *rows,
        Row(label, "power: detected by response_rate within 21 days", f"{power:.2f}", ">= 0.8", power >= 0.8),
        Row(label, "median delay to fire", f"{statistics.median(delays):.1f} days" if delays else "none detected"),
    ]


# --- the scenarios and the table ---


def _name(prefix: str, i: int) -> str:
    return f"sim:{prefix}{i:04d}"


def null_rows(seed: int, segments: int, days: int, rates: Sequence[float], rules: Rules, timing: Timing) -> list[Row]:
    rows = []
    for rate in rates:
        truths = {_name(f"null{rate:g}_", i): stable(rate) for i in range(segments)}
        outcome = simulate(truths, START, START + timedelta(days=days), rules, timing, seed)
        months = segments * days / 30
        # response streams only: the response_rate rule has its own streams of invitations (rate_rows)
        watched = [rule for rule in rules.enabled() if rule != "response_rate"]
        per_rule = {rule: sum(1 for r, _, _ in outcome.fired if r == rule) / months for rule in watched}
        for rule, rate_30d in per_rule.items():
            target = "<= 0.05" if rule == "drop" else ""
            met = rate_30d <= 0.05 if rule == "drop" else None
            rows.append(
                Row(
                    f"null, {rate:g}/day",
                    f"false {rule} alerts per segment per 30 days",
                    f"{rate_30d:.3f}",
                    target,
                    met,
                )
            )
        rows.append(
            Row(
                f"null, {rate:g}/day",
                "false alerts per segment per 30 days, all rules",
                f"{sum(per_rule.values()):.3f}",
            )
        )
    return rows


def drop_rows(seed: int, segments: int, rules: Rules, timing: Timing) -> list[Row]:
    per_day = 400 / 7  # ~400 responses per 7-day window
    truths = {_name("drop", i): step_change(per_day, START, nps_shift(-10)) for i in range(segments)}
    outcome = simulate(truths, START, START + timedelta(days=7), rules, timing, seed)
    first: dict[str, datetime] = {}
    for rule, segment, at in outcome.fired:
        if rule == "drop":
            first.setdefault(segment, at)
    power = len(first) / segments
    delays = sorted((at - START).total_seconds() / 86400 for at in first.values())
    median = f"{statistics.median(delays):.1f} days" if delays else "none detected"
    return [
        Row(
            "10-point drop, ~400 per window",
            "power: detected by the drop rule within 7 days",
            f"{power:.2f}",
            ">= 0.8",
            power >= 0.8,
        ),
        Row("10-point drop, ~400 per window", "median delay to fire", median),
    ]


def fdr_rows(seed: int, segments: int, dropping: int, rules: Rules, timing: Timing, runs: int = 1) -> list[Row]:
    """The false discovery proportion among the drop rule's findings, per round, averaged over the
    rounds of `runs` independent runs (one run's rounds are strongly correlated: a false finding
    lasts days, so one run alone is a noisy estimate)."""
    per_day = 400 / 7
    true = {_name("fdr", i) for i in range(dropping)}
    truths = {
        _name("fdr", i): step_change(per_day, START, nps_shift(-10)) if i < dropping else stable(per_day)
        for i in range(segments)
    }
    per_run: list[float] = []
    found_true: list[int] = []
    for run in range(runs):
        outcome = simulate(truths, START, START + timedelta(days=14), rules, timing, seed + 1000 * run)
        proportions = []
        for held in outcome.held:
            found = held.get("drop", [])
            proportions.append(sum(1 for s in found if s not in true) / max(1, len(found)))
        per_run.append(statistics.fmean(proportions) if proportions else 0.0)
        found_true.append(len({s for r, s, _ in outcome.fired if r == "drop" and s in true}))
    fdr = statistics.fmean(per_run)
    label = f"{segments} segments, {dropping} drop"
    spread = f" (runs: {min(per_run):.3f}-{max(per_run):.3f})" if runs > 1 else ""
    return [
        Row(
            label,
            f"false discovery proportion, mean over rounds of {runs} run(s)",
            f"{fdr:.3f}{spread}",
            f"<= q = {rules.drop.q}",
            fdr <= rules.drop.q,
        ),
        Row(label, "true drops found within 14 days, per run", f"{statistics.fmean(found_true):.1f} of {dropping}"),
    ]


def gradual_rows(seed: int, segments: int, weeks: int, rules: Rules, timing: Timing) -> list[Row]:
    per_day = 400 / 7

    def declining(moment: datetime) -> Shares:
        elapsed = max(0.0, (moment - START).total_seconds() / (7 * 86400))
        return nps_shift(-1.0 * elapsed)

    truths = {_name("slow", i): Truth(per_day, declining) for i in range(segments)}
    outcome = simulate(truths, START, START + timedelta(weeks=weeks), rules, timing, seed, round_minutes=60)
    rows = []
    for rule in ("ewma", "drop"):
        first: dict[str, datetime] = {}
        for fired_rule, segment, at in outcome.fired:
            if fired_rule == rule:
                first.setdefault(segment, at)
        delays = sorted((at - START).days / 7 for at in first.values())
        median = f"{statistics.median(delays):.1f} weeks" if delays else f"not within {weeks} weeks"
        rows.append(
            Row(
                "1 point a week decline, ~57/day",
                f"{rule}: detected / median delay",
                f"{len(first)} of {segments} / {median}",
            )
        )
    return rows


def incident_rows(seed: int, segments: int, rules: Rules, timing: Timing, quiet_days: int = 2) -> list[Row]:
    """`quiet_days` of normal traffic (every minute a round: the false incidents), then the day the
    detractor share doubles at 14:00."""
    day = START + timedelta(days=quiet_days)
    at = day + timedelta(hours=14)
    p, pa, d = STABLE
    doubled = (p - d / 2, pa - d / 2, 2 * d)  # detractors 20% -> 40%
    truths = {_name("incident", i): step_change(2400, at, doubled) for i in range(segments)}
    outcome = simulate(truths, START, day + timedelta(hours=17), rules, timing, seed, round_minutes=1)
    first: dict[str, datetime] = {}
    early = 0
    for rule, segment, moment in outcome.fired:
        if rule == "incident":
            if moment < at:
                early += 1
            else:
                first.setdefault(segment, moment)
    delays = sorted((m - at).total_seconds() / 60 for m in first.values())
    within = sum(1 for x in delays if x <= 180)
    median = statistics.median(delays) if delays else math.inf
    months = segments * (at - START).total_seconds() / (30 * 86400)
    label = "detractors 20% -> 40% at 14:00, 100/hour"
    return [
        Row(
            label,
            "median time to fire",
            f"{median:.0f} min" if delays else "none",
            "<= 60 min",
            median <= 60,
        ),
        Row(label, "incidents fired within 3 hours", f"{within} of {segments}", "all", within == segments),
        Row(label, "slowest time to fire", f"{max(delays):.0f} min" if delays else "none"),
        Row(
            "null, 100/hour",
            "false incident alerts per segment per 30 days",
            f"{early / months:.3f}",
            "<= 0.01",
            early / months <= 0.01,
        ),
    ]


@dataclass(frozen=True, slots=True)
class Size:
    null_segments: int
    null_days: int
    null_rates: tuple[float, ...]
    drop_segments: int
    fdr_segments: int
    fdr_dropping: int
    fdr_runs: int
    slow_segments: int
    slow_weeks: int
    incident_segments: int
    rate_segments: int
    rate_days: int


PUBLISH = Size(400, 30, (8, 400 / 7, 300), 200, 200, 10, 8, 50, 26, 50, 200, 60)
QUICK = Size(20, 10, (400 / 7,), 20, 40, 4, 1, 5, 10, 5, 10, 20)


def run(seed: int, size: Size, rules: Rules | None = None, timing: Timing | None = None) -> list[Row]:
    rules = rules or Rules()
    timing = timing or Timing()
    return [
        *null_rows(seed, size.null_segments, size.null_days, size.null_rates, rules, timing),
        *drop_rows(seed + 1, size.drop_segments, rules, timing),
        *fdr_rows(seed + 2, size.fdr_segments, size.fdr_dropping, rules, timing, size.fdr_runs),
        *gradual_rows(seed + 3, size.slow_segments, size.slow_weeks, rules, timing),
        *incident_rows(seed + 4, size.incident_segments, rules, timing),
        *rate_rows(seed + 5, size.rate_segments, size.rate_days, rules, timing),
    ]


def main(seed: int, quick: bool, write: str | None) -> int:
    """`nps alerts simulate`: print the table; with `write`, put it between the markers in that file."""
    size = QUICK if quick else PUBLISH
    return simulate_command("nps alerts simulate", lambda: run(seed, size), seed, quick, write, ", default settings")
