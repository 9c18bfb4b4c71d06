"""Experiments in the policy (issue 38): the `holdout` and `experiment` syntax and its checks, the
planner honouring a person's arm (held out: no message, no ticket, no contact counted), the
confidence sequence and the results worked out by hand."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from followup_service.contact.domain import ContactRules
from followup_service.experiments import estimators, results
from followup_service.experiments.estimators import Moments
from followup_service.experiments.repository import assignments_of
from followup_service.experiments.results import ArmPeople
from followup_service.experiments.spec import Arm, Experiment
from followup_service.handlers import facts_of
from followup_service.routing.api import SampleResponse, answer_for
from followup_service.routing.domain import Routing, plan_batch
from followup_service.routing.policy import PolicyError, load
from shared.wire import Submitted

T0 = datetime(2026, 12, 1, tzinfo=UTC)
TEMPLATES = """
templates:
  short: {en: {subject: s, text: t}}
  long: {en: {subject: s, text: t}}
"""


def write(tmp_path: Path, rules: str, templates: str = TEMPLATES) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(f"version: x-1\nrules:\n{rules}\n{templates}")
    return path


def problems(tmp_path: Path, rules: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load(write(tmp_path, rules))
    return [f"{p.rule}|{p.field}|{p.problem}" for p in caught.value.problems]


def test_a_holdout_is_two_arms_treated_and_held_out_named_by_the_rule(tmp_path: Path) -> None:
    policy = load(
        write(
            tmp_path,
            """
  - {name: passives, when: {category: passive}, action: education, template: short, holdout: 0.1}
  - {name: promoters, when: {category: promoter}, action: referral, holdout: {share: 0.25, id: promo-27}}
""",
        )
    )
    passives, promoters = policy.experiments
    assert passives == Experiment(
        "passives", "passives", (Arm("treated", 0.9, "education", "short"), Arm("held_out", 0.1, "none", None)),
        "held_out",
    )  # fmt: skip
    assert (promoters.experiment_id, promoters.weights) == ("promo-27", (("treated", 0.75), ("held_out", 0.25)))
    assert policy.decide(facts_of_score(7)).experiment == passives
    explained = answer_for(policy, SampleResponse(score=7))  # POST /v1/policy/explain, nps followup policy explain
    assert explained.experiment is not None and explained.experiment.experiment_id == "passives"
    assert [(a.arm, a.weight, a.action) for a in explained.experiment.arms] == [
        ("treated", 0.9, "education"), ("held_out", 0.1, "none")
    ]  # fmt: skip
    assert answer_for(policy, SampleResponse(score=3)).experiment is None


def facts_of_score(score: int):  # type: ignore[no-untyped-def]
    return facts_of(Submitted(response_id="r", respondent_id="p", score=score, answered_at=T0, submitted_at=T0), None)


def test_an_experiment_s_arms_take_the_rule_s_action_and_template_unless_they_name_their_own(tmp_path: Path) -> None:
    policy = load(
        write(
            tmp_path,
            """
  - name: welcome
    when: {category: passive}
    action: education
    template: short
    experiment:
      id: welcome-v2
      arms: {control: {weight: 0.2, action: none}, short: 0.4, long: {weight: 0.4, template: long}}
""",
        )
    )
    [experiment] = policy.experiments
    assert experiment.arms == (
        Arm("control", 0.2, "none", None), Arm("short", 0.4, "education", "short"), Arm("long", 0.4, "education", "long")
    )  # fmt: skip
    assert experiment.control == "control"  # the held-out arm, unless `control` names another


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            "  - {name: a, action: education, experiment: {arms: {x: 0.5, y: {weight: 0.4, template: long}}}}",
            "a|experiment.arms|the arms' weights sum to 0.9, not 1",
        ),
        (
            "  - {name: a, action: education, experiment: {arms: {x: 0.5, y: {weight: 0.5, template: nope}}}}",
            "a|experiment.arms.y.template|unknown template 'nope'",
        ),
        (
            "  - {name: a, action: education, experiment: {arms: {x: 0.5, y: 0.5}}}",
            "a|experiment.arms|its arms do not differ: each gets the same action and template",
        ),
        (
            "  - {name: a, action: education, holdout: 0.1, experiment: {arms: {x: 0.5, y: 0.5}}}",
            "a|holdout|give a holdout or an experiment, not both",
        ),
        (
            "  - {name: a, action: none, holdout: 0.1}",
            "a|holdout|the rule's action is none: there is nothing to hold out",
        ),
        (
            "  - {name: a, action: education, experiment: {arms: {x: 0.5, y: {weight: 0.5, action: none, "
            "template: short}}}}",
            "a|experiment.arms.y.template|a held-out arm (action none) sends nothing",
        ),
        (
            "  - {name: a, when: {category: passive}, action: education, holdout: {share: 0.1, id: same}}\n"
            "  - {name: b, action: referral, holdout: {share: 0.2, id: same}}",
            "b|holdout.id|experiment id 'same' is also rule a's",
        ),
        ("  - {name: a, action: education, holdout: 1.0}", "a|holdout.share|Input should be less than 1"),
        (
            "  - {name: a, action: education, experiment: {control: z, arms: {x: 0.5, y: {weight: 0.5, action: none}}}}",
            "a|experiment|control 'z' is not one of the arms ['x', 'y']",
        ),
        ("  - {name: a, action: education, experiment: {arms: {x: 1.0}}}", "a|experiment.arms|"),
    ],
)
def test_the_policy_check_refuses_unsound_experiments_naming_rule_and_field(
    tmp_path: Path, rules: str, expected: str
) -> None:
    found = problems(tmp_path, rules)
    assert any(p.startswith(expected) for p in found), found


# --- the planner ---

HOLDOUT = Experiment(
    "passives", "passives", (Arm("treated", 0.5, "education", "short"), Arm("held_out", 0.5, "none", None)), "held_out"
)
TICKETS = Experiment(
    "tickets", "detractors", (Arm("treated", 0.5, "ticket", None), Arm("held_out", 0.5, "none", None)), "held_out"
)


def decide(event, previous):  # type: ignore[no-untyped-def]
    if event.score <= 6:
        return Routing("ticket", rule="detractors", policy_version="x-1", experiment=TICKETS)
    return Routing("education", rule="passives", policy_version="x-1", template="short", experiment=HOLDOUT)


def by_name(experiment: Experiment, rkey: str) -> str:
    """Tests choose the arm: people whose key starts with `out` are held out."""
    return "held_out" if rkey.startswith("k:out") else "treated"


def answer(rid: str, who: str, score: int, at: datetime = T0) -> Submitted:
    return Submitted(response_id=rid, respondent_id=who, score=score, answered_at=at, submitted_at=at)


def test_a_held_out_person_gets_no_message_no_ticket_and_no_contact_counted() -> None:
    rules = ContactRules(default_min_days=30, max_per_window=5, window_days=90)
    plan = plan_batch(
        [answer("r1", "out-1", 7), answer("r2", "out-1", 8), answer("r3", "in-1", 7), answer("r4", "in-1", 8),
         answer("r5", "out-2", 2), answer("r6", "in-2", 2)],
        {}, {}, {}, lambda who: f"k:{who}", T0, decide, None, {}, rules, by_name,
    )  # fmt: skip
    states = {
        f.response.response_id: (f.kind, f.status, f.reason, f.ticket_id is not None, f.experiment_id, f.arm)
        for f in plan.new
    }
    assert states == {
        # held out twice: neither counts as a contact, so nothing throttles the second
        "r1": ("education", "held_out", "experiment passives: arm held_out", False, "passives", "held_out"),
        "r2": ("education", "held_out", "experiment passives: arm held_out", False, "passives", "held_out"),
        "r3": ("education", "created", None, False, "passives", "treated"),
        "r4": ("education", "suppressed", "throttled", False, "passives", "treated"),  # r3 was a contact
        "r5": ("ticket", "held_out", "experiment tickets: arm held_out", False, "tickets", "held_out"),
        "r6": ("ticket", "created", None, True, "tickets", "treated"),
    }
    assert [t.response.response_id for t in plan.tickets] == ["r6"]
    assert plan.new[2].template == "short" and plan.new[0].template is None


def test_an_arm_s_own_action_and_template_are_what_the_person_gets() -> None:
    arms = Experiment(
        "w", "welcome", (Arm("control", 0.5, "none", None), Arm("long", 0.5, "thank_you", "long")), "control"
    )
    plan = plan_batch(
        [answer("r1", "in-1", 7)], {}, {}, {}, lambda who: f"k:{who}", T0,
        lambda e, p: Routing("education", template="short", experiment=arms), None, {}, ContactRules(),
        lambda e, k: "long",
    )  # fmt: skip
    [f] = plan.new
    assert (f.kind, f.template, f.status, f.arm) == ("thank_you", "long", "created", "long")


def test_a_person_s_first_answer_in_an_experiment_assigns_them() -> None:
    plan = plan_batch(
        [answer("r1", "in-1", 7), answer("r2", "in-1", 8, T0 + timedelta(days=1)), answer("r3", "out-1", 7)],
        {}, {}, {}, lambda who: f"k:{who}", T0, decide, None, {}, ContactRules(), by_name,
    )  # fmt: skip
    rows = assignments_of(plan.new, lambda who: f"k:{who}")
    assert rows == [
        ("passives", "k:in-1", "treated", "r1", 7, T0), ("passives", "k:out-1", "held_out", "r3", 7, T0)
    ]  # fmt: skip


# --- the confidence sequence and the results, by hand ---


def test_the_confidence_sequence_s_radius_is_the_normal_mixture_boundary() -> None:
    # se * sqrt((1 + N0/n) log((1 + n/N0) / alpha^2)); at n = N0: sqrt(2 log(2 / 0.0025)) = 3.65640...
    assert estimators.anytime_radius(1.0, estimators.N0) == pytest.approx(math.sqrt(2 * math.log(800)), rel=1e-12)
    assert estimators.anytime_radius(2.0, 100, n0=400) == pytest.approx(2 * math.sqrt(5 * math.log(1.25 / 0.0025)))
    # wider than the fixed interval at every n, and narrower per person as n grows
    for n in (2, 20, 400, 10_000, 1_000_000):
        assert estimators.anytime_radius(1.0, n) > estimators.Z95
    assert estimators.anytime_radius(1 / math.sqrt(10_000), 10_000) < estimators.anytime_radius(1 / math.sqrt(100), 100)


@given(st.floats(-150, 150), st.floats(0.1, 50), st.integers(2, 100_000))
def test_the_anytime_interval_holds_the_fixed_one(points: float, se: float, n: int) -> None:
    fixed = estimators.Estimate(points, points - estimators.Z95 * se, points + estimators.Z95 * se, n)
    wide = estimators.anytime(fixed)
    assert wide.low < fixed.low and wide.high > fixed.high and wide.points == points
    assert (wide.high - wide.low) / 2 == pytest.approx(estimators.anytime_radius(se, n))


def people(arm: str, pairs: list[tuple[int, int]], first: datetime = T0) -> ArmPeople:
    return ArmPeople(arm, len(pairs) + 3, first, [(b, a, first, 3) for b, a in pairs])


def test_an_effect_is_decided_only_with_enough_people_and_an_anytime_interval_off_zero() -> None:
    arms = [Arm("treated", 0.5, "education", None), Arm("held_out", 0.5, "none", None)]
    treated = [(0, 100)] * 120 + [(0, 0)] * 40  # +75 mean change
    control = [(0, 0)] * 120 + [(0, 100)] * 40  # +25
    found = results.results(arms, "held_out", {"treated": people("treated", treated),
                                               "held_out": people("held_out", control)}, date(2026, 12, 7))  # fmt: skip
    [effect] = found.effects
    assert effect.effect is not None and effect.effect.points == pytest.approx(50.0)
    # each arm's variance: 160 values, 120 at one level and 40 at another 100 apart
    se = math.sqrt(2 * (100**2 * 120 * 40 / 160 / 159) / 160)
    assert effect.effect.high - effect.effect.low == pytest.approx(2 * estimators.Z95 * se)
    assert effect.anytime is not None and effect.anytime.low == pytest.approx(50 - estimators.anytime_radius(se, 320))
    assert effect.anytime.low > 0 and effect.decided
    assert [(a.arm, a.assigned, a.resurveyed) for a in found.arms] == [("treated", 163, 160), ("held_out", 163, 160)]
    # Fewer people: the fixed interval is off zero, the anytime one is not yet
    few = results.results(arms, "held_out", {"treated": people("treated", treated[::8]),
                                             "held_out": people("held_out", control[::8])}, date(2026, 12, 7))  # fmt: skip
    assert few.effects[0].effect is not None and few.effects[0].effect.low > 0 and not few.effects[0].decided
    all_up = [(0, 100)] * 19  # no spread: the intervals are a point, off zero, but 19 < MIN_PER_ARM
    fewer = results.results(arms, "held_out", {"treated": people("treated", all_up),
                                               "held_out": people("held_out", [(0, 0)] * 19)}, date(2026, 12, 7))  # fmt: skip
    assert fewer.effects[0].anytime is not None and fewer.effects[0].anytime.low > 0
    assert not fewer.effects[0].decided


def test_power_says_how_many_people_are_needed_and_by_when_at_the_pace_so_far() -> None:
    arms = [Arm("treated", 0.5, "education", None), Arm("held_out", 0.5, "none", None)]
    today = date(2026, 12, 7)
    first = datetime(2026, 12, 7, tzinfo=UTC) + timedelta(days=1) - timedelta(days=10)  # 10 days of pace
    pairs = [(0, 100), (0, 0), (0, -100), (0, 0)] * 5  # 20 a day over 10 days: 2 a day per arm
    found = results.results(
        arms, "held_out", {"treated": people("treated", pairs, first), "held_out": people("held_out", pairs, first)},
        today, effect_points=10,
    )  # fmt: skip
    sd = math.sqrt(100**2 * 20 / 39)  # both arms' 40 changes: ten at +100, ten at -100, twenty at 0
    needed = math.ceil(2 * (estimators.Z95 + estimators.Z80) ** 2 * sd * sd / 100)
    assert (found.power.needed_per_arm, found.power.have_per_arm) == (needed, 20)
    assert found.power.enough_by == today + timedelta(days=math.ceil((needed - 20) / 2))


def test_the_naive_comparison_is_followed_up_minus_not_from_their_moments() -> None:
    followed, others = Moments.of([200, 100]), Moments.of([0, 0, 100, 100])
    arms = [Arm("treated", 0.5, "education", None), Arm("held_out", 0.5, "none", None)]
    found = results.results(arms, "held_out", {}, date(2026, 12, 7), naive=(followed, others))
    assert found.naive is not None and found.naive.points == pytest.approx(150 - 50)
    se = math.sqrt(5000 / 2 + (10000 / 3) / 4)  # each group's sample variance over its n
    assert found.naive.high == pytest.approx(100 + estimators.Z95 * se)
    assert results.results(arms, "held_out", {}, date(2026, 12, 7)).naive is None  # nobody yet
