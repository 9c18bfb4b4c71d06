"""Alerts' decisions, pure: one evaluation round over every segment (`evaluate_round`), and the
state machine each (rule, segment) pair walks (`step`). `now` is always passed in.

The state machine, per (rule, segment):

    ok --condition--> pending --held `for_evaluations` rounds and `for_s`--> firing   (AlertFired)
    pending --clear--> ok
    firing --clear--> resolving --clear for `clear_s`--> ok + cooldown              (AlertResolved)
    resolving --condition--> firing   (held: a flapping alert pages once, not on every flap)
    ok during cooldown: the condition is ignored until `cooldown_until`

A rule with no verdict (too few responses) leaves the state where it is: alerts change only on
evidence, never on its absence (except the silence rule, whose evidence *is* absence).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from alerts_service.detection import (
    Contribution,
    DropTest,
    Ewma,
    Rules,
    Verdict,
    contributions,
    drop_round,
    ewma_verdict,
    incident_verdict,
    silence_verdict,
    usual_gap,
)
from shared.events import AlertContributor, AlertExplanation, AlertWindowCounts
from shared.nps import NO_INVITATIONS, Counts, Rate, ci95, wilson95
from shared.segments import OVERALL, parts
from shared.windows import DayRange, preceding, window

_NAMESPACE = uuid.UUID("0b7f3c2e-8d51-4a7e-9f0a-6c1d2e3f4a5b")


class State(StrEnum):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVING = "resolving"


@dataclass(frozen=True, slots=True)
class Timing:
    for_evaluations: int = 3  # consecutive rounds the condition must hold before paging
    # ...and for at least this long: under traffic rounds come every few seconds, not every minute
    for_s: float = 120.0
    clear_s: float = 1800.0  # hysteresis: clear this long before resolving
    cooldown_s: float = 6 * 3600.0  # after resolving, the same rule and segment stay quiet this long


@dataclass(frozen=True, slots=True)
class RuleState:
    rule: str
    segment: str
    state: State = State.OK
    since: datetime | None = None  # when the current state began
    evaluations: int = 0  # consecutive rounds with the condition held (pending)
    alert_id: str | None = None  # the open alert (firing, resolving)
    cooldown_until: datetime | None = None
    flaps: int = 0  # times the open alert came back while resolving


class Transition(StrEnum):
    FIRED = "fired"
    RESOLVED = "resolved"


def alert_id(rule: str, segment: str, fired_at: datetime) -> str:
    return f"al_{uuid.uuid5(_NAMESPACE, f'{rule}|{segment}@{fired_at.isoformat()}').hex}"


def step(
    state: RuleState, verdict: Verdict | None, now: datetime, timing: Timing
) -> tuple[RuleState, Transition | None]:
    if verdict is None:
        return state, None
    held = verdict.condition
    if state.state is State.OK:
        if not held or (state.cooldown_until is not None and now < state.cooldown_until):
            return state, None
        state = replace(state, state=State.PENDING, since=now, evaluations=0)
    if state.state is State.PENDING:
        if not held:
            return RuleState(state.rule, state.segment, cooldown_until=state.cooldown_until), None
        evaluations = state.evaluations + 1
        assert state.since is not None
        if evaluations >= timing.for_evaluations and (now - state.since).total_seconds() >= timing.for_s:
            opened = alert_id(state.rule, state.segment, now)
            return replace(state, state=State.FIRING, since=now, evaluations=0, alert_id=opened, flaps=0), (
                Transition.FIRED
            )
        return replace(state, evaluations=evaluations), None
    if state.state is State.FIRING:
        return (state, None) if held else (replace(state, state=State.RESOLVING, since=now), None)
    # resolving
    if held:
        return replace(state, state=State.FIRING, since=now, flaps=state.flaps + 1), None
    assert state.since is not None
    if (now - state.since).total_seconds() >= timing.clear_s:
        cooldown = now + timedelta(seconds=timing.cooldown_s)
        return RuleState(state.rule, state.segment, cooldown_until=cooldown), Transition.RESOLVED
    return state, None


# --- one round ---


@dataclass(frozen=True, slots=True)
class SegmentData:
    """What a round knows about one segment (alerts' mirror of scoring's daily counts, and the
    arrivals it saw): the drop windows, the EWMA's days, the recent arrivals, the last arrival."""

    segment: str
    current: Counts
    baseline: Counts
    drop: DropTest | None  # detection.drop_test(current, baseline): the service keeps it with its windows
    ewma: Ewma | None  # detection.ewma over the reference then the monitored days
    recent: Counts
    last_arrival: datetime | None
    # The invitations of the rate windows (Windows.rates_*), and detection.rate_test of them.
    current_rate: Rate = NO_INVITATIONS
    baseline_rate: Rate = NO_INVITATIONS
    rate: DropTest | None = None


@dataclass(frozen=True, slots=True)
class Windows:
    current: DayRange
    baseline: DayRange
    # The response_rate rule's: as long as the drop rule's, ending `settle_days` before today.
    rates_current: DayRange | None = None
    rates_baseline: DayRange | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """A transition this round: the new state, and what the alert says about itself."""

    state: RuleState
    transition: Transition
    explanation: AlertExplanation


@dataclass(frozen=True, slots=True)
class Round:
    states: list[RuleState]  # every (rule, segment) whose state changed (to be saved)
    changes: list[Change]  # fired and resolved, in (rule, segment) order
    verdicts: int  # rule verdicts reached (segments x rules, less the "too little data")
    firing: dict[str, int] = field(default_factory=dict)  # per rule, after the round
    held: dict[str, list[str]] = field(default_factory=dict)  # per rule: segments whose condition holds now


def evaluate_round(
    data: Sequence[SegmentData],
    states: Mapping[tuple[str, str], RuleState],
    rules: Rules,
    windows: Windows,
    now: datetime,
    timing: Timing,
) -> Round:
    verdicts: dict[str, list[Verdict | None]] = {}
    if rules.drop.enabled:
        verdicts["drop"] = drop_round([d.drop for d in data], rules.drop)
    if rules.ewma.enabled:
        verdicts["ewma"] = [ewma_verdict(d.ewma, rules.ewma) for d in data]
    if rules.incident.enabled:
        verdicts["incident"] = [incident_verdict(d.recent, d.baseline, rules.incident) for d in data]
    if rules.silence.enabled:
        verdicts["silence"] = [
            silence_verdict(d.last_arrival, d.baseline, rules.drop.baseline_days, now, rules.silence) for d in data
        ]
    if rules.response_rate.enabled:
        verdicts["response_rate"] = drop_round([d.rate for d in data], rules.drop, rules.response_rate.min_drop_points)
    by_segment = {d.segment: d for d in data}
    family: dict[str, list[str]] | None = None  # parent -> children, built at the round's first change
    saved: list[RuleState] = []
    changes: list[Change] = []
    reached = 0
    firing: dict[str, int] = {}
    held: dict[str, list[str]] = {}
    for rule, answers in verdicts.items():
        count = 0
        held[rule] = [d.segment for d, v in zip(data, answers, strict=True) if v is not None and v.condition]
        for segment_data, verdict in zip(data, answers, strict=True):
            before = states.get((rule, segment_data.segment))
            if verdict is None:
                count += before is not None and before.state in (State.FIRING, State.RESOLVING)
                continue
            reached += 1
            if before is None:
                if not verdict.condition:
                    continue  # ok, and stays ok: most of a round
                before = RuleState(rule, segment_data.segment)
            after, transition = step(before, verdict, now, timing)
            if after != before:
                saved.append(after)
            count += after.state in (State.FIRING, State.RESOLVING)
            if transition is not None:
                if family is None:
                    family = children_of(by_segment)
                kids = {s: by_segment[s] for s in family.get(segment_data.segment, ())}
                explanation = explain(rule, segment_data, verdict, kids, rules, windows, now)
                changes.append(Change(after if transition is Transition.FIRED else before, transition, explanation))
        firing[rule] = count
    return Round(saved, changes, reached, firing, held)


def children_of(segments: Mapping[str, SegmentData]) -> dict[str, list[str]]:
    """parent -> the segments that refine it by one dimension (shared.segments.is_child), in one pass:
    a segment of k parts has k parents (each part left out; `all` for one part)."""
    family: dict[str, list[str]] = {}
    for segment in segments:
        pieces = parts(segment)
        if not pieces:
            continue
        for i in range(len(pieces)):
            parent = ",".join(pieces[:i] + pieces[i + 1 :]) or OVERALL
            if parent in segments:
                family.setdefault(parent, []).append(segment)
    return family


def explain(
    rule: str,
    data: SegmentData,
    verdict: Verdict,
    children: Mapping[str, SegmentData],
    rules: Rules,
    windows: Windows,
    now: datetime,
) -> AlertExplanation:
    """Everything an alert says about itself: both windows with NPS and 95% intervals, the test's
    numbers, the sub-segments that moved the score most, a one-line summary and rule details."""
    movers: list[Contribution] = (
        []  # the sub-segments that moved the NPS say nothing of a response rate
        if rule == "response_rate"
        else contributions(
            data.current,
            data.baseline,
            {s: (d.current, d.baseline) for s, d in children.items() if d.current.n + d.baseline.n > 0},
        )
    )
    detail: dict[str, float | int | str | None] = {}
    if rule == "response_rate":
        detail = rate_detail(data, windows)
        moved = verdict.drop_points or 0.0
        text = (
            f"Response rate of {data.segment} {'fell' if moved > 0 else 'rose'} {abs(moved):.1f} points: "
            f"{_pct(data.current_rate)} ({data.current_rate.responded} of {data.current_rate.invited} invited) vs "
            f"{_pct(data.baseline_rate)} ({data.baseline_rate.responded} of {data.baseline_rate.invited}), "
            f"q={verdict.q_value:.2g}"
        )
    elif rule == "drop":
        moved = verdict.drop_points or 0.0
        text = (
            f"NPS of {data.segment} {'fell' if moved > 0 else 'rose'} {abs(moved):.1f} points: "
            f"{_pts(data.current.nps)} (n={data.current.n}) vs {_pts(data.baseline.nps)} (n={data.baseline.n}), "
            f"q={verdict.q_value:.2g}"
        )
    elif rule == "ewma":
        detail = {"lambda": rules.ewma.lam, "limit_sd": rules.ewma.limit, "monitored_days": rules.ewma.monitored_days}
        text = f"NPS of {data.segment} has declined steadily: EWMA {verdict.drop_points or 0:.1f} points below its reference"
    elif rule == "incident":
        share = data.baseline.detractors / data.baseline.n if data.baseline.n else None
        detail = {
            "recent_minutes": rules.incident.minutes,
            "recent_n": data.recent.n,
            "recent_detractors": data.recent.detractors,
            "baseline_detractor_share": None if share is None else round(share, 4),
        }
        text = (
            f"Detractors in {data.segment}: {data.recent.detractors} of the last {data.recent.n} responses "
            f"({rules.incident.minutes} min) vs {100 * (share or 0):.0f}% usually"
        )
    else:
        gap = usual_gap(data.baseline, rules.drop.baseline_days)
        silent = None if data.last_arrival is None else (now - data.last_arrival).total_seconds()
        detail = {
            "last_arrival": None if data.last_arrival is None else data.last_arrival.isoformat(),
            "silent_s": silent,
            "usual_gap_s": None if gap is None else gap.total_seconds(),
        }
        text = f"No responses in {data.segment} for {(silent or 0) / 3600:.1f} h (usually one every {_hours(gap)})"
    return AlertExplanation(
        summary=text,
        current=summarise(windows.current, data.current),
        baseline=summarise(windows.baseline, data.baseline),
        statistic=_round(verdict.statistic),
        p_value=verdict.p_value,
        q_value=verdict.q_value,
        drop_points=_round(verdict.drop_points),
        contributors=[
            AlertContributor(
                segment=c.segment,
                points=c.points,
                current_n=c.current_n,
                baseline_n=c.baseline_n,
                current_nps=_round(c.current_nps),
                baseline_nps=_round(c.baseline_nps),
            )
            for c in movers
        ],
        detail=detail,
    )


def rate_detail(data: SegmentData, windows: Windows) -> dict[str, float | int | str | None]:
    """The response_rate alert's own numbers: each window's days, invitations, answers, and rate
    with its Wilson 95% interval (percent)."""
    detail: dict[str, float | int | str | None] = {}
    for name, days, rate in (
        ("current", windows.rates_current, data.current_rate),
        ("baseline", windows.rates_baseline, data.baseline_rate),
    ):
        interval = wilson95(rate.responded, rate.invited)
        detail |= {
            f"{name}_first_day": None if days is None else days.first.isoformat(),
            f"{name}_last_day": None if days is None else days.last.isoformat(),
            f"{name}_invited": rate.invited,
            f"{name}_responded": rate.responded,
            f"{name}_rate": None if rate.rate is None else round(100 * rate.rate, 2),
            f"{name}_ci_low": None if interval is None else round(100 * interval.low, 2),
            f"{name}_ci_high": None if interval is None else round(100 * interval.high, 2),
        }
    return detail


def summarise(days: DayRange, counts: Counts) -> AlertWindowCounts:
    interval = ci95(counts)
    return AlertWindowCounts(
        first_day=days.first,
        last_day=days.last,
        promoters=counts.promoters,
        passives=counts.passives,
        detractors=counts.detractors,
        nps=_round(counts.nps),
        ci_low=round(interval.low, 2),
        ci_high=round(interval.high, 2),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _pts(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _pct(rate: Rate) -> str:
    return "n/a" if rate.rate is None else f"{100 * rate.rate:.1f}%"


def _hours(gap: timedelta | None) -> str:
    if gap is None:
        return "n/a"
    hours = gap.total_seconds() / 3600
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


def round_windows(today: date, rules: Rules) -> Windows:
    current = window(today, rules.drop.current_days)
    settled = window(today - timedelta(days=rules.response_rate.settle_days), rules.drop.current_days)
    return Windows(
        current, preceding(current, rules.drop.baseline_days), settled, preceding(settled, rules.drop.baseline_days)
    )
