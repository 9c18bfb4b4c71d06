"""The detection rules against hand-computed values, BH against the published table, the state
machine's transitions, and a round's explanation."""

from __future__ import annotations

import math
import struct
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts_service.detection import (
    DropRule,
    Ewma,
    EwmaRule,
    IncidentRule,
    RateRule,
    Rules,
    SilenceRule,
    benjamini_hochberg,
    binomial_upper_tail,
    contributions,
    drop_round,
    drop_test,
    ewma,
    incident_verdict,
    rate_test,
    silence_verdict,
)
from alerts_service.domain import (
    RuleState,
    SegmentData,
    State,
    Timing,
    Transition,
    Verdict,
    children_of,
    evaluate_round,
    round_windows,
    step,
)
from alerts_service.handlers import Due, EvaluateRounds, round_due, stats_of
from alerts_service.repository import NO_DAYS, NO_RATES, Days, RateDays, int4s
from shared.nps import Counts, Rate, compare_rates, normal_cdf
from shared.segments import is_child, parts
from shared.windows import DayRange

T0 = datetime(2026, 11, 24, 12, tzinfo=UTC)


# --- drop ---


def test_drop_test_is_the_adjusted_wald_z_test() -> None:
    # baseline: n' = 103, NPS' = (60.75 - 20.75) / 103 = 0.38835, V' = (0.79126 - 0.15082) / 103 = 0.0062180
    # current:  n' = 43,  NPS' = 0,                           V' = 0.73256 / 43 = 0.0170363
    # z = -0.38835 / sqrt(0.0232543) = -2.5467, one-sided p = 0.00544
    test = drop_test(Counts(15, 10, 15), Counts(60, 20, 20), DropRule())
    assert test is not None
    assert test.z == pytest.approx(-2.5467, abs=1e-3)
    assert test.p_value == pytest.approx(0.00544, abs=5e-5)
    assert test.drop_points == pytest.approx(40.0)


@pytest.mark.parametrize(("cur_n", "base_n"), [(29, 100), (100, 29), (0, 0)])
def test_too_few_responses_means_no_verdict(cur_n: int, base_n: int) -> None:
    assert drop_test(Counts(0, 0, cur_n), Counts(base_n, 0, 0), DropRule(min_responses=30)) is None


# Benjamini & Hochberg (1995), section 4: fifteen p-values; at q = 0.05 the first four are rejected.
BH_P = [
    0.0001,
    0.0004,
    0.0019,
    0.0095,
    0.0201,
    0.0278,
    0.0298,
    0.0344,
    0.0459,
    0.3240,
    0.4262,
    0.5719,
    0.6528,
    0.7590,
    1.0,
]
# R: p.adjust(p, "BH")
BH_Q = [
    0.0015,
    0.003,
    0.0095,
    0.035625,
    0.0603,
    0.063857,
    0.063857,
    0.0645,
    0.0765,
    0.486,
    0.581182,
    0.714875,
    0.753231,
    0.813214,
    1.0,
]


def test_benjamini_hochberg_matches_the_published_example() -> None:
    assert benjamini_hochberg(BH_P) == pytest.approx(BH_Q, abs=1e-6)
    assert sum(q <= 0.05 for q in benjamini_hochberg(BH_P)) == 4
    shuffled = [BH_P[i] for i in (14, 3, 0, 9, 1, 13, 2, 12, 4, 11, 5, 10, 6, 8, 7)]
    assert benjamini_hochberg(shuffled) == pytest.approx(
        [BH_Q[i] for i in (14, 3, 0, 9, 1, 13, 2, 12, 4, 11, 5, 10, 6, 8, 7)], abs=1e-6
    )


@given(st.lists(st.floats(0, 1), min_size=1, max_size=60), st.floats(0.001, 0.5))
def test_bh_rejects_exactly_the_step_up_set(p_values: list[float], q: float) -> None:
    """Reject every p_(i) with i <= k, k the largest rank with p_(k) <= k q / m."""
    m = len(p_values)
    ranked = sorted(p_values)
    # p_(k) <= k q / m, with the same 1e-12 of slack as the check below: at p == q, `i * q / m` and
    # `p * m / i` can round to opposite sides (found by hypothesis: p = [0, 0, q], q = 0.408...).
    k = max((i for i in range(1, m + 1) if ranked[i - 1] * m / i <= q * (1 + 1e-12)), default=0)
    threshold = ranked[k - 1] if k else -1.0
    adjusted = benjamini_hochberg(p_values)
    assert [a <= q * (1 + 1e-12) for a in adjusted] == [p <= threshold for p in p_values]  # p * m / k: 1 ulp
    assert all(p <= a + 1e-12 and a <= 1.0 for p, a in zip(p_values, adjusted, strict=True))


def test_a_round_needs_both_significance_and_size() -> None:
    rule = DropRule(min_drop_points=5, q=0.05)
    big = drop_test(Counts(15, 10, 15), Counts(60, 20, 20), rule)  # 40 points, p 0.005
    tiny = drop_test(Counts(5000, 3000, 2040), Counts(5000, 3000, 2000), rule)  # 0.4 points on 10,000
    none = drop_test(Counts(1, 0, 0), Counts(60, 20, 20), rule)
    verdicts = drop_round([big, tiny, none], rule)
    assert verdicts[0] is not None and verdicts[0].condition and verdicts[0].q_value == pytest.approx(2 * big.p_value)  # type: ignore[union-attr]
    assert verdicts[1] is not None and not verdicts[1].condition
    assert verdicts[2] is None


# --- ewma ---


def test_ewma_by_hand() -> None:
    # reference: 28 days of (5, 3, 2): mu0 = 0.3, sigma^2 = 0.7 - 0.09 = 0.61, 10 a day
    # day 1 (2, 3, 5): x = -0.3, lam 0.2 -> z = -0.06 + 0.24 = 0.18, var = 0.04 * 0.061 = 0.00244
    # day 2 (5, 3, 2): x = 0.3 -> z = 0.06 + 0.144 = 0.204, var = 0.00244 + 0.64 * 0.00244 = 0.0040016
    # sd = sqrt(0.0040016 + 0.61 / 280) = 0.078614; limit = 0.3 - 3 * 0.078614 = 0.064158
    rule = EwmaRule(lam=0.2, limit=3.0, reference_days=28, monitored_days=2, min_reference=100)
    result = ewma([Counts(5, 3, 2)] * 28 + [Counts(2, 3, 5), Counts(5, 3, 2)], rule)
    assert result is not None
    assert result.mean == pytest.approx(30.0)
    assert result.value == pytest.approx(20.4)
    assert result.lower_limit == pytest.approx(6.4158, abs=1e-3)


def test_ewma_weighs_a_day_by_its_responses() -> None:
    """Today's first response moves the EWMA by 1 - 0.8^(1/10) of the way, not by lam."""
    rule = EwmaRule(lam=0.2, reference_days=28, monitored_days=1, min_reference=100)
    result = ewma([Counts(5, 3, 2)] * 28 + [Counts(0, 0, 1)], rule)
    assert result is not None
    weight = 1 - 0.8 ** (1 / 10)
    assert result.value == pytest.approx(100 * (weight * -1 + (1 - weight) * 0.3))


def test_ewma_waits_for_its_reference() -> None:
    rule = EwmaRule(reference_days=28, monitored_days=1, min_reference=100)
    assert ewma([Counts(1, 1, 1)] * 29, rule) is None  # 84 responses in the reference


# --- incident ---


def test_binomial_tail_by_hand() -> None:
    assert binomial_upper_tail(3, 5, 0.5) == pytest.approx(16 / 32)
    assert binomial_upper_tail(1, 3, 0.1) == pytest.approx(1 - 0.9**3)
    # 45 * 0.2^8 * 0.8^2 + 10 * 0.2^9 * 0.8 + 0.2^10
    assert binomial_upper_tail(8, 10, 0.2) == pytest.approx(7.79264e-5, rel=1e-9)
    assert binomial_upper_tail(0, 10, 0.2) == 1.0 and binomial_upper_tail(11, 10, 0.2) == 0.0


@given(st.integers(1, 60), st.data(), st.floats(0.01, 0.99))
def test_binomial_tail_is_the_sum_of_its_terms(n: int, data: st.DataObject, p: float) -> None:
    k = data.draw(st.integers(0, n))
    exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    assert binomial_upper_tail(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-15)


def test_an_incident_needs_a_surprising_count_and_a_minimum() -> None:
    rule = IncidentRule(min_detractors=10, alpha=1e-5)
    baseline = Counts(500, 300, 200)  # 20% detractors
    spike = incident_verdict(Counts(10, 10, 30), baseline, rule)  # 30 of 50
    assert spike is not None and spike.condition and spike.p_value is not None and spike.p_value < 1e-9
    few = incident_verdict(Counts(0, 0, 5), baseline, rule)  # 5 of 5: surprising, but five
    assert few is not None and not few.condition
    usual = incident_verdict(Counts(25, 15, 10), baseline, rule)
    assert usual is not None and not usual.condition
    assert incident_verdict(Counts(), baseline, rule) is None


# --- silence ---


def test_silence_is_many_usual_gaps() -> None:
    rule = SilenceRule(multiple=12, min_silence=timedelta(hours=6), min_baseline=56)
    baseline = Counts(140, 84, 56)  # 280 in 28 days: one every 2.4 h; 12 gaps = 28.8 h
    fired = silence_verdict(T0 - timedelta(hours=30), baseline, 28, T0, rule)
    assert fired is not None and fired.condition and fired.statistic == pytest.approx(12.5)
    quiet = silence_verdict(T0 - timedelta(hours=20), baseline, 28, T0, rule)
    assert quiet is not None and not quiet.condition
    assert silence_verdict(T0 - timedelta(days=9), Counts(20, 10, 10), 28, T0, rule) is None  # not watched


# --- segments and contributions ---


def test_children_add_one_dimension() -> None:
    assert parts("product:atlas,region:eu") == ("product:atlas", "region:eu")
    assert parts("note:a,b") == ("note:a,b",)  # a comma inside a value does not split
    assert is_child("all", "channel:web") and not is_child("all", "product:atlas,region:eu")
    assert is_child("region:eu", "product:atlas,region:eu") and not is_child("region:eu", "product:atlas,region:us")
    assert not is_child("channel:web", "channel:web") and not is_child("channel:web", "all")


def test_contributions_sum_over_a_partition() -> None:
    eu_now, eu_before = Counts(10, 10, 30), Counts(30, 10, 10)
    us_now, us_before = Counts(30, 10, 10), Counts(30, 10, 10)
    parent_now, parent_before = eu_now + us_now, eu_before + us_before
    movers = contributions(
        parent_now, parent_before, {"region:eu": (eu_now, eu_before), "region:us": (us_now, us_before)}
    )
    assert [m.segment for m in movers] == ["region:eu"]  # us moved nothing
    assert movers[0].points == pytest.approx(parent_now.nps - parent_before.nps)  # type: ignore[operator]


# --- the state machine ---

HELD, CLEAR = Verdict(True), Verdict(False)
TIMING = Timing(for_evaluations=3, for_s=0, clear_s=600, cooldown_s=3600)


def walk(verdicts: list[Verdict | None], minutes: int = 1) -> tuple[RuleState, list[Transition | None]]:
    state = RuleState("drop", "all")
    seen = []
    for i, verdict in enumerate(verdicts):
        state, transition = step(state, verdict, T0 + timedelta(minutes=i * minutes), TIMING)
        seen.append(transition)
    return state, seen


def test_pending_then_firing_after_for_rounds() -> None:
    state, seen = walk([HELD, HELD])
    assert state.state is State.PENDING and seen == [None, None]
    state, seen = walk([HELD, HELD, HELD])
    assert state.state is State.FIRING and seen[-1] is Transition.FIRED and state.alert_id is not None
    state, _ = walk([HELD, HELD, CLEAR])
    assert state == RuleState("drop", "all")  # pending that clears leaves no trace


def test_no_verdict_changes_nothing() -> None:
    state, seen = walk([HELD, None, None, HELD, HELD])
    assert state.state is State.FIRING and seen[-1] is Transition.FIRED


def test_hysteresis_flapping_and_cooldown() -> None:
    script = [HELD] * 3 + [CLEAR, HELD] + [CLEAR] * 11  # fires at 2; back at 4 (a flap); clear from 5
    state, seen = walk(script)
    assert seen.count(Transition.FIRED) == 1 and seen.index(Transition.FIRED) == 2
    assert seen[-1] is Transition.RESOLVED and seen.count(Transition.RESOLVED) == 1  # 10 min after 5: at 15
    assert state.state is State.OK and state.cooldown_until == T0 + timedelta(minutes=15 + 60)
    # during the cooldown a held condition is ignored; after it, pending again
    quiet, _ = step(state, HELD, T0 + timedelta(minutes=30), TIMING)
    assert quiet == state
    again, _ = step(state, HELD, T0 + timedelta(minutes=80), TIMING)
    assert again.state is State.PENDING


def test_a_flap_is_counted_on_the_open_alert() -> None:
    state, seen = walk([HELD] * 3 + [CLEAR, HELD, CLEAR, HELD])
    assert state.state is State.FIRING and state.flaps == 2 and seen.count(Transition.FIRED) == 1


@given(st.lists(st.sampled_from([HELD, CLEAR, None]), max_size=80))
def test_fired_and_resolved_alternate(verdicts: list[Verdict | None]) -> None:
    _, seen = walk(verdicts, minutes=3)
    events = [t for t in seen if t is not None]
    assert events == [Transition.FIRED, Transition.RESOLVED] * (len(events) // 2) + [Transition.FIRED] * (
        len(events) % 2
    )
    for i, transition in enumerate(seen):  # a fire follows `for_evaluations` held rounds
        if transition is Transition.FIRED:
            held = [v for v in verdicts[: i + 1] if v is not None][-3:]
            assert held == [HELD] * 3


# --- a round ---


def test_a_round_fires_with_an_explanation_naming_the_sub_segment() -> None:
    eu_now, eu_before = Counts(20, 10, 50), Counts(120, 40, 40)
    us_now, us_before = Counts(48, 16, 16), Counts(120, 40, 40)  # NPS 40 both times: moved nothing

    rules = Rules(
        ewma=EwmaRule(enabled=False),
        incident=IncidentRule(enabled=False),
        silence=SilenceRule(enabled=False),
        response_rate=RateRule(enabled=False),
    )

    def seg(name: str, now: Counts, before: Counts) -> SegmentData:
        return SegmentData(name, now, before, drop_test(now, before, rules.drop), None, Counts(), T0)

    data = [
        seg("all", eu_now + us_now, eu_before + us_before),
        seg("region:eu", eu_now, eu_before),
        seg("region:us", us_now, us_before),
    ]
    windows = round_windows(date(2026, 11, 24), rules)
    result = evaluate_round(data, {}, rules, windows, T0, Timing(for_evaluations=1, for_s=0))
    fired = {c.state.segment: c for c in result.changes if c.transition is Transition.FIRED}
    assert set(fired) == {"all", "region:eu"} and result.held["drop"] == ["all", "region:eu"]
    explanation = fired["all"].explanation
    assert [c.segment for c in explanation.contributors] == ["region:eu"]
    assert explanation.current.first_day == date(2026, 11, 18) and explanation.baseline.last_day == date(2026, 11, 17)
    assert explanation.current.nps is not None
    assert explanation.current.ci_low < explanation.current.nps < explanation.current.ci_high
    assert explanation.q_value is not None and explanation.p_value is not None
    assert explanation.q_value >= explanation.p_value and "fell" in explanation.summary
    assert result.firing == {"drop": 2}


def test_the_normal_tail_keeps_its_precision() -> None:
    assert normal_cdf(-10) == pytest.approx(7.619853024160527e-24, rel=1e-9)  # erf would say 0
    assert normal_cdf(0) == 0.5 and normal_cdf(1.959963984540054) == pytest.approx(0.975)


def test_children_are_indexed_once_per_round() -> None:
    names = ["all", "channel:web", "region:eu", "product:atlas,region:eu", "plan:pro,region:us"]
    data = {n: SegmentData(n, Counts(), Counts(), None, None, Counts(), None) for n in names}
    family = children_of(data)
    assert family == {"all": ["channel:web", "region:eu"], "region:eu": ["product:atlas,region:eu"]}
    for parent in names:  # the index agrees with the rule it stands for
        assert sorted(family.get(parent, [])) == sorted(n for n in names if is_child(parent, n))


def test_for_needs_rounds_and_time() -> None:
    """Under traffic rounds come every few seconds: three rounds in ten seconds are not `for` 2 minutes."""
    timing = Timing(for_evaluations=3, for_s=120)
    state = RuleState("incident", "all")
    for second in (0, 5, 10, 60):
        state, transition = step(state, HELD, T0 + timedelta(seconds=second), timing)
        assert transition is None and state.state is State.PENDING
    state, transition = step(state, HELD, T0 + timedelta(seconds=120), timing)
    assert transition is Transition.FIRED


def test_rounds_follow_the_schedule_and_batches_at_most_every_gap() -> None:
    # last round at 100 s, the next scheduled at 160 s, batches may ask every 5 s
    assert not round_due(101, 160, 100, asked=False, min_gap_s=5)
    assert not round_due(103, 160, 100, asked=True, min_gap_s=5)  # asked, but too soon
    assert round_due(105, 160, 100, asked=True, min_gap_s=5)
    assert round_due(160, 160, 100, asked=False, min_gap_s=5)  # the schedule needs no asking


def _by_day(days: Days) -> dict[date, Counts]:
    held = zip(days.promoters, days.passives, days.detractors, strict=True)
    return {days.first + timedelta(days=i): Counts(*day) for i, day in enumerate(held) if any(day)}


def _stats_by_definition(days: Days, rules: Rules, today: date) -> tuple[Counts, Counts, Ewma | None]:
    """The windows and the EWMA as the rules define them on `today`: each window's days summed as
    Counts, and `ewma` over one Counts per day of its span, the reference first, oldest first; a
    day after today is in none."""
    drop, trend = rules.drop, rules.ewma
    by_ago = {(today - day).days: c for day, c in _by_day(days).items() if day <= today}
    current = sum((c for ago, c in by_ago.items() if ago < drop.current_days), Counts())
    baseline = sum(
        (c for ago, c in by_ago.items() if drop.current_days <= ago < drop.current_days + drop.baseline_days),
        Counts(),
    )
    span = trend.reference_days + trend.monitored_days
    series = [by_ago.get(ago, Counts()) for ago in range(span, 0, -1)]
    return current, baseline, ewma(series, trend)


_DAY = st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30))


@given(
    st.lists(_DAY, max_size=130),
    st.integers(-10, 140),
    st.integers(1, 14),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(1, 70),
    st.integers(1, 200),
)
def test_a_segment_s_windows_and_ewma_from_its_days_are_the_rules_definition(
    held: list[tuple[int, int, int]],
    first_ago: int,
    current_days: int,
    baseline_days: int,
    reference_days: int,
    monitored_days: int,
    min_reference: int,
) -> None:
    """Days held from any day before or after today (a score from a clock ahead; days kept and
    worked out again on a later day), zero days among them."""
    rules = Rules(
        drop=DropRule(current_days=current_days, baseline_days=baseline_days),
        ewma=EwmaRule(reference_days=reference_days, monitored_days=monitored_days, min_reference=min_reference),
    )
    today = date(2026, 11, 27)
    columns = [[day[i] for day in held] for i in range(3)]
    days = Days(today - timedelta(days=first_ago), *columns)
    assert stats_of(days, rules, today) == _stats_by_definition(days, rules, today)


def test_no_days_held_give_empty_windows() -> None:
    assert stats_of(NO_DAYS, Rules(), date(2026, 11, 27)) == (Counts(), Counts(), None)


@given(
    st.lists(_DAY, max_size=40),
    st.integers(-20, 20),
    st.integers(-20, 40),
    st.integers(0, 20),
    st.dictionaries(st.integers(-5, 25), _DAY, max_size=25),
)
def test_a_span_replaced_is_exactly_its_new_days_and_the_rest_kept(
    held: list[tuple[int, int, int]],
    first_at: int,
    span_at: int,
    span_length: int,
    given_days: dict[int, tuple[int, int, int]],
) -> None:
    """The mirror's step: the span's days become exactly those given in it (one outside it is
    ignored; a day with none is none), the days outside it stay; held again from the first day
    with responses to the last, and the span's sum before is what was held in it."""
    origin = date(2026, 11, 1)
    days = Days(origin + timedelta(days=first_at), *[[day[i] for day in held] for i in range(3)])
    first = origin + timedelta(days=span_at)
    last = first + timedelta(days=span_length)
    new = [(first + timedelta(days=i), Counts(*c)) for i, c in sorted(given_days.items())]
    before = _by_day(days)
    replaced = days.replaced(first, last, new)
    expected = {day: c for day, c in before.items() if not first <= day <= last}
    expected |= {day: c for day, c in new if first <= day <= last and c.n}
    assert _by_day(replaced) == expected
    if expected:
        assert replaced.first == min(expected) and len(replaced.promoters) == (max(expected) - min(expected)).days + 1
    else:
        assert replaced == NO_DAYS
    assert days.sum(first, last) == sum((c for day, c in before.items() if first <= day <= last), Counts())


@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=100))
def test_an_int4_array_reads_back_from_array_send_bytes(values: list[int]) -> None:
    """PostgreSQL's array_send of a one-dimensional int4[] (lower bound 1, no NULLs); of '{}', a
    header without a dimension (the e2e loop's alerts died on one: a segment's rates all erased)."""
    if values:
        sent = struct.pack(">iiiii", 1, 0, 23, len(values), 1) + b"".join(struct.pack(">ii", 4, v) for v in values)
    else:
        sent = struct.pack(">iii", 0, 0, 23)
    assert list(int4s(sent)) == values


@pytest.mark.parametrize(
    "header",
    [(2, 0, 23, 1, 1), (1, 1, 23, 1, 1), (1, 0, 20, 1, 1), (1, 0, 23, 2, 1)],
    ids=["two dimensions", "nulls", "int8", "short"],
)
def test_anything_but_an_int4_array_without_nulls_is_refused(header: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="int4"):
        int4s(struct.pack(">iiiii", *header) + struct.pack(">ii", 4, 7))


@given(st.integers(0, 9_000), st.integers(1, 3_000))
def test_the_reads_take_every_stale_segment_once_in_order_the_last_part_small(stale: int, chunk: int) -> None:
    """A round reads its stale segments `chunk` at a time; the last read is split so that the work
    no read overlaps stays small (10,000 segments: 2,000 x 4, 1,500, 500)."""
    rounds = EvaluateRounds(Rules(), Timing(), "t", 60.0, lambda: datetime.now(UTC), Due(), chunk=chunk)
    segments = [f"s{i:05}" for i in range(stale)]
    parts = rounds._parts(segments)
    assert [s for part in parts for s in part] == segments
    assert all(0 < len(part) <= chunk for part in parts)
    if stale > chunk >= 4:
        assert len(parts[-1]) <= chunk // 4
    else:
        assert len(parts) == -(-stale // chunk)  # a round with no more than a read's worth: one read


def test_ten_thousand_segments_are_read_in_six_parts() -> None:
    rounds = EvaluateRounds(Rules(), Timing(), "t", 60.0, lambda: datetime.now(UTC), Due())
    assert [len(part) for part in rounds._parts([f"s{i}" for i in range(10_000)])] == [
        2000,
        2000,
        2000,
        2000,
        1500,
        500,
    ]


# --- response_rate ---


def test_two_proportions_by_hand() -> None:
    # 30% of 1,000 then 25% of 1,000: pooled 0.275, SE sqrt(0.275 x 0.725 x 2/1000) = 0.019969,
    # z = -0.05 / 0.019969 = -2.5039, one-sided p = Phi(-2.5039) = 0.00614
    comparison = compare_rates(Rate(1000, 300), Rate(1000, 250))
    assert comparison.z == pytest.approx(-2.5039, abs=1e-4)
    assert comparison.p_value_drop == pytest.approx(0.006141, abs=2e-6)
    assert comparison.difference == pytest.approx(-5.0)
    assert compare_rates(Rate(50, 0), Rate(70, 0)).z == 0.0  # nobody answered either time: no change
    assert compare_rates(Rate(50, 50), Rate(70, 70)).p_value_drop == 0.5
    with pytest.raises(ValueError):
        compare_rates(Rate(0, 0), Rate(10, 1))


@given(
    st.integers(1, 5000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
    st.integers(1, 5000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
)
def test_a_lower_current_rate_is_the_one_sided_drop(base: tuple[int, int], now: tuple[int, int]) -> None:
    comparison = compare_rates(Rate(*base), Rate(*now))
    assert (comparison.z < 0) == (now[1] / now[0] < base[1] / base[0])
    assert 0.0 <= comparison.p_value_drop <= 1.0
    mirrored = compare_rates(Rate(*now), Rate(*base))
    assert mirrored.z == pytest.approx(-comparison.z, abs=1e-9)


def test_the_rate_rule_needs_the_drop_rule_s_minimum_of_invitations_each_side() -> None:
    rule = DropRule(min_responses=30)
    assert rate_test(Rate(29, 1), Rate(500, 100), rule) is None
    assert rate_test(Rate(500, 1), Rate(29, 10), rule) is None
    test = rate_test(Rate(400, 48), Rate(1600, 320), rule)  # 12% against 20%
    assert test is not None and test.drop_points == pytest.approx(8.0) and test.z == pytest.approx(-3.693, abs=1e-3)


def test_the_rate_windows_end_settle_days_before_today() -> None:
    windows = round_windows(date(2026, 12, 7), Rules(response_rate=RateRule(settle_days=3)))
    assert windows.current.last == date(2026, 12, 7)
    assert (windows.rates_current, windows.rates_baseline) == (
        DayRange(date(2026, 11, 28), date(2026, 12, 4)),
        DayRange(date(2026, 10, 31), date(2026, 11, 27)),
    )


RATES_ONLY = Rules(
    drop=DropRule(),
    ewma=EwmaRule(enabled=False),
    incident=IncidentRule(enabled=False),
    silence=SilenceRule(enabled=False),
)


def rate_segment(name: str, now: Rate, before: Rate) -> SegmentData:
    return SegmentData(
        name, Counts(), Counts(), None, None, Counts(), None, now, before, rate_test(now, before, RATES_ONLY.drop)
    )


def test_a_fallen_rate_fires_with_its_numbers_and_a_small_or_stable_one_does_not() -> None:
    data = [
        rate_segment("channel:email", Rate(400, 48), Rate(1600, 320)),  # 20% -> 12%
        rate_segment("channel:web", Rate(400, 78), Rate(1600, 320)),  # 20% -> 19.5%: not 5 points
        rate_segment("channel:sms", Rate(20, 0), Rate(1600, 320)),  # 20 invitations: no verdict
    ]
    windows = round_windows(date(2026, 12, 7), RATES_ONLY)
    timing = Timing(for_evaluations=2, for_s=0)
    first = evaluate_round(data, {}, RATES_ONLY, windows, T0, timing)
    assert first.changes == [] and first.held["response_rate"] == ["channel:email"]
    assert first.verdicts == 2  # sms: too few invitations to say
    states = {(s.rule, s.segment): s for s in first.states}
    second = evaluate_round(data, states, RATES_ONLY, windows, T0 + timedelta(minutes=1), timing)
    [fired] = second.changes
    assert (fired.state.rule, fired.state.segment, fired.transition) == ("response_rate", "channel:email", "fired")
    explanation = fired.explanation
    assert explanation.drop_points == pytest.approx(8.0) and explanation.contributors == []
    assert explanation.q_value is not None and explanation.q_value <= 0.05
    assert "Response rate of channel:email fell 8.0 points: 12.0% (48 of 400 invited) vs 20.0%" in explanation.summary
    detail = explanation.detail
    assert (detail["current_invited"], detail["current_responded"], detail["current_rate"]) == (400, 48, 12.0)
    assert (detail["baseline_first_day"], detail["current_last_day"]) == ("2026-10-30", "2026-12-03")  # 4 settling days
    assert detail["current_ci_low"] < 12.0 < detail["current_ci_high"]  # type: ignore[operator]
    assert second.firing == {"drop": 0, "response_rate": 1}


def test_rate_days_sum_the_windows_they_hold() -> None:
    days = RateDays.of(date(2026, 12, 1), [(date(2026, 12, 2), Rate(10, 3)), (date(2026, 12, 4), Rate(5, 5))])
    assert list(days.invited) == [0, 10, 0, 5] and list(days.responded) == [0, 3, 0, 5]
    assert days.sum(date(2026, 11, 1), date(2026, 12, 31)) == Rate(15, 8)
    assert days.sum(date(2026, 12, 3), date(2026, 12, 4)) == Rate(5, 5)
    assert days.sum(date(2026, 12, 5), date(2026, 12, 9)) == Rate(0, 0)
    assert NO_RATES.sum(date(2026, 12, 1), date(2026, 12, 9)) == Rate(0, 0)
    assert RateDays.of(date(2026, 12, 1), []).sum(date(2026, 12, 1), date(2026, 12, 9)) == Rate(0, 0)
