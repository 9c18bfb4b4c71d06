"""The follow-up policy (followup_service/routing/policy.py): checked with errors that name the file, the
rule and the field; the first matching rule wins; the default policy does what the README says."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from followup_service.routing.domain import route
from followup_service.routing.matching import Facts, Matcher, When, why_not
from followup_service.routing.policy import DEFAULT_POLICY, PolicyError, load


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


FULL = """
version: acme-7
rules:
  - name: enterprise-detractor-with-comment
    when: {category: detractor, attributes: {plan: enterprise}, comment: present}
    action: ticket
    priority: urgent
  - name: relapsed-promoter
    when: {score: {max: 6}, history: {previous_category: promoter}}
    action: csm_call
  - name: other-detractors
    when: {category: detractor}
    action: ticket
  - name: first-time-passives-on-web
    when: {category: passive, channel: web, history: {first_answer: true}}
    action: education
  - name: passives
    when: {category: passive}
    action: thank_you
  - name: promoters
    when: {score: {min: 9}}
    action: referral
"""


@given(st.integers(0, 10))
def test_the_default_policy_routes_every_score_as_documented(score: int) -> None:
    decision = load(DEFAULT_POLICY).decide(Facts(score=score))
    assert decision.action == route(score) and decision.rule is not None


@given(st.integers(0, 10))
def test_the_default_policy_follows_up_no_anonymous_answer_and_every_vouched_one(score: int) -> None:
    policy = load(DEFAULT_POLICY)
    anonymous = policy.decide(Facts(score=score, identity="anonymous"))
    assert (anonymous.action, anonymous.rule) == ("none", "anonymous")
    verified = policy.decide(Facts(score=score, identity="verified"))
    assert verified.action == route(score) and verified.rule != "anonymous"
    explained = policy.explain(Facts(score=score, identity="verified"))
    assert ("anonymous", ["the identity 'verified' is not one of ['anonymous']"]) in explained.skipped


def test_the_first_matching_rule_decides(tmp_path: Path) -> None:
    policy = load(write(tmp_path, FULL))
    enterprise = Facts(score=3, attributes={"plan": "enterprise"}, has_comment=True)
    assert (policy.decide(enterprise).rule, policy.decide(enterprise).priority) == (
        "enterprise-detractor-with-comment",
        "urgent",
    )
    assert policy.decide(Facts(score=3, attributes={"plan": "enterprise"})).rule == "other-detractors"
    relapsed = policy.decide(Facts(score=2, first_answer=False, previous_category="promoter"))
    assert (relapsed.action, relapsed.rule, relapsed.policy_version) == ("csm_call", "relapsed-promoter", "acme-7")
    assert policy.decide(Facts(score=7, channel="web")).action == "education"
    assert policy.decide(Facts(score=7, channel="web", first_answer=False)).action == "thank_you"
    assert policy.decide(Facts(score=10)).action == "referral"


def test_no_matching_rule_means_no_follow_up(tmp_path: Path) -> None:
    policy = load(
        write(tmp_path, "version: v\nrules:\n  - {name: promoters, when: {category: promoter}, action: referral}\n")
    )
    decision = policy.decide(Facts(score=3))
    assert (decision.action, decision.rule) == ("none", None)


def test_explain_says_why_each_earlier_rule_did_not_match(tmp_path: Path) -> None:
    explained = load(write(tmp_path, FULL)).explain(Facts(score=7, channel="email"))
    assert explained.decision.rule == "passives"
    reasons = dict(explained.skipped)
    assert list(reasons) == [
        "enterprise-detractor-with-comment",
        "relapsed-promoter",
        "other-detractors",
        "first-time-passives-on-web",
    ]
    assert reasons["first-time-passives-on-web"] == ["channel 'email' is not one of ['web']"]


@pytest.mark.parametrize(
    ("text", "rule", "field", "problem"),
    [
        ("version: v\nrules:\n  - {name: a, whenn: {}, action: ticket}\n", "a", "whenn", "unknown field"),
        ("version: v\nrules:\n  - {name: a, when: {plann: x}, action: ticket}\n", "a", "when.plann", "unknown field"),
        (
            "version: v\nrules:\n  - {name: a, when: {score: {min: 9, max: 3}}, action: x}\n",
            "a",
            "when.score",
            "above max",
        ),
        ("version: v\nrules:\n  - {name: a, action: referral, priority: high}\n", "a", "", "priority is for tickets"),
        ("version: v\nrules:\n  - {name: a, action: referral, sla: {resolution: 2d}}\n", "a", "", "sla is for tickets"),
        (
            "version: v\nrules:\n  - {name: a, action: ticket, sla: {first_contact: soon}}\n",
            "a",
            "sla.first_contact",
            "a duration",
        ),
        (
            "version: v\nrules:\n  - {name: a, action: ticket, sla: {first_contact: 0s}}\n",
            "a",
            "sla.first_contact",
            "greater than 0",
        ),
        ("version: v\nrules:\n  - {name: a, action: ticket, sla: {}}\n", "a", "sla", "first_contact, resolution"),
        (
            "version: v\nrules:\n  - {name: a, action: ticket, sla: {respond: 1h}}\n",
            "a",
            "sla.respond",
            "unknown field",
        ),
        (
            "version: v\nrules:\n  - {name: a, when: {category: promoter, score: {max: 6}}, action: x}\n",
            "a",
            "when",
            "never match",
        ),
        (
            "version: v\nrules:\n  - {name: a, action: x}\n  - {name: b, when: {category: promoter}, action: y}\n",
            "b",
            "when",
            "rule a",
        ),
        (
            "version: v\nrules:\n  - {name: a, when: {category: passive}, action: x}\n  - {name: a, action: y}\n",
            "a",
            "name",
            "another rule",
        ),
        ("version: v\nrules:\n  - {name: a, action: Not-An-Action}\n", "a", "action", "pattern"),
        ("version: v\nrules:\n  - {action: x}\n", "#1", "name", "required"),
        ("version: v\nrules: []\n", None, "rules", "at least 1"),
        (
            "version: v\nrules:\n  - {name: a, when: {history: {first_answer: true, previous_category: promoter}}, action: x}\n",
            "a",
            "when.history",
            "no previous category",
        ),
        ("version: v\nrules: [\n", None, "line", "not valid YAML"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_file_rule_and_field(
    tmp_path: Path, text: str, rule: str | None, field: str, problem: str
) -> None:
    with pytest.raises(PolicyError) as refused:
        load(write(tmp_path, text))
    found = refused.value.problems
    assert any(p.rule == rule and p.field.startswith(field) and problem in p.problem for p in found), found
    assert all(p.file.endswith("policy.yaml") for p in found)


def test_a_missing_file_and_an_unknown_template_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot be read"):
        load(tmp_path / "nowhere.yaml")
    path = write(tmp_path, "version: v\nrules:\n  - {name: a, action: referral, template: ask_friends}\n")
    with pytest.raises(PolicyError, match="rule a, template: unknown template 'ask_friends'"):
        load(path, known_templates=["referral_ask"])


CATEGORIES = st.sampled_from(["promoter", "passive", "detractor"])
IDENTITIES = st.sampled_from(["server", "verified", "anonymous"])
WHENS = st.builds(
    dict,
    category=st.none() | st.lists(CATEGORIES, min_size=1, max_size=2),
    score=st.none() | st.integers(0, 10).flatmap(lambda lo: st.builds(dict, min=st.just(lo), max=st.integers(lo, 10))),
    channel=st.none() | st.lists(st.sampled_from(["web", "email", "sms"]), min_size=1, max_size=2),
    survey_id=st.none() | st.lists(st.sampled_from(["s1", "s2"]), min_size=1),
    attributes=st.dictionaries(st.sampled_from(["plan", "region"]), st.lists(st.sampled_from(["a", "b"]), min_size=1)),
    comment=st.none() | st.sampled_from(["present", "absent"]),
    history=st.none()
    | st.builds(dict, first_answer=st.none() | st.just(False), previous_category=st.none() | st.lists(CATEGORIES))
    | st.builds(dict, first_answer=st.just(True)),
    identity=st.none() | st.lists(IDENTITIES, min_size=1, max_size=2),
).map(lambda d: When.model_validate({k: v for k, v in d.items() if v is not None}))
FACTS = st.builds(
    Facts,
    score=st.integers(0, 10),
    channel=st.none() | st.sampled_from(["web", "email", "sms"]),
    survey_id=st.none() | st.sampled_from(["s1", "s2"]),
    attributes=st.dictionaries(st.sampled_from(["plan", "region"]), st.sampled_from(["a", "b", "c"])),
    has_comment=st.booleans(),
    first_answer=st.booleans(),
    previous_category=st.none() | CATEGORIES,
    identity=IDENTITIES,
)


@given(WHENS, FACTS)
def test_the_quick_matcher_agrees_with_the_explanation(when: When, facts: Facts) -> None:
    # decide() tests a rule with Matcher, explain() with why_not: they must never disagree.
    assert Matcher.of(when).matches(facts) == (not why_not(when, facts))


def test_a_ticket_rule_can_set_its_own_sla(tmp_path: Path) -> None:
    policy = load(
        write(
            tmp_path,
            "version: v\nrules:\n"
            "  - {name: vip, when: {attributes: {plan: enterprise}}, action: ticket, priority: urgent,"
            " sla: {first_contact: 2h, resolution: 1.5d}}\n"
            "  - {name: quick, when: {category: detractor}, action: ticket, sla: {first_contact: 90}}\n"
            "  - {name: others, action: thank_you}\n",
        )
    )
    vip = policy.decide(Facts(score=2, attributes={"plan": "enterprise"}))
    assert (vip.first_contact_s, vip.resolution_s) == (7_200, 129_600)
    quick = policy.decide(Facts(score=2))
    assert (quick.rule, quick.first_contact_s, quick.resolution_s) == ("quick", 90, None)  # resolution: the priority's
    assert (
        policy.decide(Facts(score=9)).first_contact_s,
        load(DEFAULT_POLICY).decide(Facts(score=1)).resolution_s,
    ) == (
        None,
        None,
    )
