"""Contact rules (followup_service/contact/domain.py): survey fatigue and consent. No person ever gets two
messages of a kind inside the gap or more than the limit in the window, whatever the batches;
an opt-out stops every message; a detractor still reaches support."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from followup_service.contact.domain import ContactHistory, ContactRules
from followup_service.routing.domain import Routed, Routing, plan_batch
from shared.wire import Submitted

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RULES = ContactRules(default_min_days=30, min_days_between={"referral": 60}, max_per_window=2, window_days=90)


def key(who: str) -> str:
    return f"k:{who}"


def response(rid: str, who: str, score: int, at: datetime = T0) -> Submitted:
    return Submitted(response_id=rid, respondent_id=who, score=score, answered_at=at, submitted_at=at)


def test_gaps_per_kind_and_the_window_limit_say_when_a_message_may_go() -> None:
    history = ContactHistory(sent=[("education", T0), ("referral", T0 + timedelta(days=40))])
    assert RULES.verdict(history, "education", T0 + timedelta(days=31)).allowed is False  # window: 2 already
    too_many = RULES.verdict(history, "thank_you", T0 + timedelta(days=50))
    assert (too_many.reason, too_many.eligible_at) == ("throttled", T0 + timedelta(days=90))
    referral = RULES.verdict(ContactHistory(sent=[("referral", T0)]), "referral", T0 + timedelta(days=45))
    assert (referral.allowed, referral.eligible_at) == (False, T0 + timedelta(days=60))  # its own 60-day gap
    assert RULES.verdict(ContactHistory(sent=[("referral", T0)]), "education", T0 + timedelta(days=1)).allowed
    assert RULES.verdict(ContactHistory(opted_out=True), "education", T0).reason == "opted_out"
    anyone = RULES.verdict(ContactHistory(sent=[("referral", T0)]), "*", T0 + timedelta(days=10), any_kind=True)
    assert (anyone.allowed, anyone.eligible_at) == (False, T0 + timedelta(days=30))


def test_the_plan_suppresses_with_a_reason_and_a_detractor_still_gets_a_ticket() -> None:
    contacts = {key("opted"): ContactHistory(opted_out=True)}
    plan = plan_batch(
        [
            response("r1", "ann", 10),
            response("r2", "ann", 9),  # the same person again: throttled
            response("r3", "opted", 10),
            response("r4", "opted", 2),
        ],
        {},
        {},
        {},
        key,
        T0,
        contacts=contacts,
        rules=RULES,
    )
    states = {f.response.response_id: (f.kind, f.status, f.reason, f.ticket_id is not None) for f in plan.new}
    assert states == {
        "r1": ("referral", "created", None, False),
        "r2": ("referral", "suppressed", "throttled", False),
        "r3": ("referral", "suppressed", "opted_out", False),
        "r4": ("ticket", "created", None, True),
    }
    assert plan.new[1].eligible_at == T0 + timedelta(days=60)
    nothing = plan_batch([response("r5", "bo", 7)], {}, {}, {}, key, T0, lambda e, p: Routing("none"))
    assert (nothing.new[0].status, nothing.new[0].reason) == ("suppressed", "policy_none")


STEP = st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 10), st.integers(0, 40))


@settings(max_examples=200)
@given(st.lists(STEP, max_size=40), st.lists(st.integers(1, 6), min_size=1, max_size=6))
def test_no_person_ever_gets_two_messages_inside_the_rules_whatever_the_batches(
    steps: list[tuple[str, int, int]], sizes: list[int]
) -> None:
    contacts: dict[str, ContactHistory] = {}
    routed: dict[str, Routed] = {}
    now, i, n = T0, 0, 0
    sent: dict[str, list[tuple[str, datetime]]] = {}
    while i < len(steps):
        batch_steps = steps[i : i + sizes[n % len(sizes)]]
        i, n = i + len(batch_steps), n + 1
        now += timedelta(days=batch_steps[0][2])
        events = [response(f"r{i}-{j}", who, score, now) for j, (who, score, _) in enumerate(batch_steps)]
        for _ in range(2):  # every batch delivered twice
            plan = plan_batch(events, routed, {}, {}, key, now, contacts=contacts, rules=RULES)
            for f in plan.new:
                rkey = key(f.response.respondent_id)
                routed[f.response.response_id] = Routed(f.response.response_id, rkey, f.kind, 1, f.ticket_id, 0)
                if f.status == "created" and f.kind != "ticket":
                    contacts.setdefault(rkey, ContactHistory()).sent.append((f.kind, now))
                    sent.setdefault(rkey, []).append((f.kind, now))
                if f.response.score <= 6:
                    assert f.kind == "ticket" and f.status == "created"  # a detractor always reaches support
    for messages in sent.values():
        for index, (kind, at) in enumerate(messages):
            earlier = messages[:index]
            assert all(not (k == kind and at - t < RULES.gap(kind)) for k, t in earlier)
            assert sum(1 for _, t in earlier if at - t < RULES.window) < RULES.max_per_window
