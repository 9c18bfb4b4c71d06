"""Routing rules (followup_service/routing/domain.py): one follow-up per response, one active ticket per
person, revisions re-routed, erased people never contacted; whatever the batches and redeliveries."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from followup_service.ids import _NAMESPACE, stable_hex
from followup_service.routing.domain import BatchPlan, Routed, followup_id, plan_batch, route
from followup_service.tickets.domain import NewTicket, revision_ticket_id, ticket_id
from shared.wire import Revised, Submitted

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def key(respondent_id: str) -> str:
    return f"k:{respondent_id}"


def submitted(rid: str, score: int, who: str = "u", at: datetime = NOW) -> Submitted:
    return Submitted(response_id=rid, respondent_id=who, score=score, answered_at=at, submitted_at=at)


def revised(rid: str, score: int, version: int, who: str = "u") -> Revised:
    return Revised(
        response_id=rid,
        respondent_id=who,
        version=version,
        score=score,
        answered_at=NOW,
        revised_at=NOW + timedelta(minutes=version),
    )


def plan(*events: Submitted | Revised, routed=None, active=None, erasures=None) -> BatchPlan:  # type: ignore[no-untyped-def]
    return plan_batch(list(events), routed or {}, active or {}, erasures or {}, key, NOW)


@pytest.mark.parametrize(
    ("score", "kind"),
    [*((s, "ticket") for s in range(7)), (7, "education"), (8, "education"), (9, "referral"), (10, "referral")],
)
def test_every_score_routes_to_exactly_one_follow_up(score: int, kind: str) -> None:
    assert route(score) == kind


def test_ids_are_stable_per_response_and_distinct_across_responses_and_versions() -> None:
    assert followup_id("r1") == followup_id("r1") and ticket_id("r1") == ticket_id("r1")
    assert followup_id("r1") != followup_id("r2") and ticket_id("r1") != ticket_id("r2")
    assert followup_id("r1", 2) != followup_id("r1") and revision_ticket_id(revised("r1", 2, 2)) != ticket_id("r1")
    assert ticket_id("r1").startswith("tk_") and followup_id("r1").startswith("fu_")


def test_only_detractors_get_a_ticket_and_a_redelivered_response_is_routed_once() -> None:
    p = plan(submitted("r6", 6, "a"), submitted("r7", 7, "b"), submitted("r10", 10, "c"), submitted("r6", 6, "a"))
    assert [(f.response.response_id, f.kind, f.ticket_id) for f in p.new] == [
        ("r6", "ticket", ticket_id("r6")),
        ("r7", "education", None),
        ("r10", "referral", None),
    ]
    assert [t.ticket_id for t in p.tickets] == [ticket_id("r6")] and p.duplicates == 1


def test_a_second_detractor_response_joins_the_person_s_active_ticket() -> None:
    p = plan(submitted("r1", 2), submitted("r2", 0))
    assert [t.ticket_id for t in p.tickets] == [ticket_id("r1")]
    assert [(o.ticket_id, o.op, o.response.response_id) for o in p.ticket_ops] == [(ticket_id("r1"), "attach", "r2")]
    assert p.new[1].ticket_id == ticket_id("r1")
    # Across batches too: the active ticket is known from the database.
    later = plan(submitted("r3", 4), active={key("u"): ticket_id("r1")})
    assert later.tickets == [] and later.ticket_ops[0].op == "attach" and later.new[0].ticket_id == ticket_id("r1")


def test_an_erased_respondent_is_never_contacted_for_what_they_said_before() -> None:
    at = {key("u"): NOW}
    covered = plan(submitted("r", 3), erasures=at)  # erased at the same moment: covered
    assert [(f.kind, f.status, f.reason, f.ticket_id, f.template) for f in covered.new] == [
        ("none", "suppressed", "erased", None, None)  # recorded, so the API can say why nothing happened
    ]
    assert covered.tickets == [] and covered.skipped_erased == 1
    again = plan(submitted("r", 3), erasures=at, routed={"r": Routed("r", key("u"), "none", 1, None, 3)})
    assert again.new == []  # recorded once
    assert plan(submitted("r", 3), erasures={key("u"): NOW + timedelta(seconds=1)}).skipped_erased == 1
    later = plan(submitted("r", 3), erasures={key("u"): NOW - timedelta(seconds=1)})  # spoke again after it
    assert later.new[0].ticket_id == ticket_id("r")


def test_revisions_re_route_across_categories_and_update_within_one() -> None:
    detractor = {"r": Routed("r", key("u"), "ticket", 1, ticket_id("r"), 2)}
    active = {key("u"): ticket_id("r")}
    up = plan(revised("r", 10, 2), routed=detractor, active=active)
    assert [(o.op, o.ticket_id) for o in up.ticket_ops] == [("resolve", ticket_id("r"))]
    assert [(f.kind, f.version, f.followup_id) for f in up.rerouted] == [("referral", 2, followup_id("r", 2))]
    same = plan(revised("r", 3, 2), routed=detractor, active=active)
    assert [(o.op, o.ticket_id) for o in same.ticket_ops] == [("revise", ticket_id("r"))] and same.revised == {"r": 2}
    promoter = {"p": Routed("p", key("u"), "referral", 1, None, 10)}
    down = plan(revised("p", 1, 2), routed=promoter)
    assert [t.ticket_id for t in down.tickets] == [revision_ticket_id(revised("p", 1, 2))]
    assert down.rerouted[0].kind == "ticket"
    joins = plan(revised("p", 1, 2), routed=promoter, active=active)
    assert joins.tickets == [] and joins.ticket_ops[0].op == "attach"
    again = {"r": Routed("r", key("u"), "ticket", 3, ticket_id("r"), 2)}
    stale = plan(revised("r", 10, 2), routed=again, active=active)
    assert (stale.duplicates, stale.rerouted, stale.ticket_ops) == (1, [], [])


EVENT = st.tuples(st.sampled_from("abc"), st.integers(0, 3), st.booleans(), st.integers(0, 10))


@settings(max_examples=300)
@given(st.lists(EVENT, max_size=40), st.lists(st.integers(1, 8), min_size=1, max_size=10), st.integers(0, 9))
def test_any_history_in_any_batches_with_redelivery_keeps_the_rules(
    raw: list[tuple[str, int, bool, int]], sizes: list[int], redeliver: int
) -> None:
    """Submissions and revisions of a few people's responses, cut into batches, one batch delivered
    twice: each response routed once, to its latest category; never a second active ticket."""
    events: list[Submitted | Revised] = []
    versions: dict[str, int] = {}
    owner: dict[str, str] = {}
    for who, n, revise, score in raw:
        rid = f"{who}-{n}"
        if rid not in versions:
            versions[rid], owner[rid] = 1, who
            events.append(submitted(rid, score, who))
        elif revise:
            versions[rid] += 1
            events.append(revised(rid, score, versions[rid], owner[rid]))
    batches, start = [], 0
    while start < len(events):
        size = sizes[len(batches) % len(sizes)]
        batches.append(events[start : start + size])
        start += size
    if batches:
        batches.insert(redeliver % len(batches) + 1, batches[redeliver % len(batches)])

    routed: dict[str, Routed] = {}
    active: dict[str, str] = {}
    new_count: dict[str, int] = {}
    for batch in batches:
        p = plan_batch(batch, routed, active, {}, key, NOW)
        for step in p.ticket_steps:  # in the order the handler applies them
            if isinstance(step, NewTicket):
                assert step.respondent_key not in active, "a second active ticket"
                active[step.respondent_key] = step.ticket_id
            elif step.op == "resolve":
                assert step.ticket_id in active.values()
                active = {k: v for k, v in active.items() if v != step.ticket_id}
            elif step.op == "attach":
                assert step.ticket_id in active.values()
        for f in p.new:
            new_count[f.response.response_id] = new_count.get(f.response.response_id, 0) + 1
        for f in p.new + p.rerouted:
            routed[f.response.response_id] = Routed(
                f.response.response_id, key(f.response.respondent_id), f.kind, f.version, f.ticket_id, f.response.score
            )
        for rid, version in p.revised.items():
            old = routed[rid]
            score = next(e.score for e in batch if e.response_id == rid and getattr(e, "version", 1) == version)
            routed[rid] = Routed(rid, old.respondent_key, old.kind, version, old.ticket_id, score)
    latest = {e.response_id: e for e in events}
    assert new_count == {rid: 1 for rid in latest}
    assert {rid: r.kind for rid, r in routed.items()} == {rid: route(e.score) for rid, e in latest.items()}
    assert {rid: r.version for rid, r in routed.items()} == versions


@given(st.text(max_size=80))
def test_ids_are_the_uuid5_they_always_were(name: str) -> None:
    # Stored follow-up and ticket ids were uuid5 hex: the quick path must give the same ids.
    assert stable_hex(name) == uuid.uuid5(_NAMESPACE, name).hex
