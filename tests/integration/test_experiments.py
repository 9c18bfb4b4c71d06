"""Experiments through follow-up's real loop, API and database (issue 38): a policy's holdout puts
each person in the arm their keyed hash says, a held-out person gets no ticket and no message and
FollowUpHeldOut is published; the results over HTTP are the ones worked out from the answers;
erasure takes a person out; a start or reload that changes a recorded experiment's arms is refused."""

from __future__ import annotations

import statistics
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from followup_service import metrics
from followup_service.bootstrap import checking_experiments, create_app, reload_policy, spec
from followup_service.experiments.assignment import arm_of
from followup_service.routing.policy import PolicyError, PolicyHolder
from shared.db import make_engine
from shared.events import RespondentErased, ResponseSubmitted, followup_events
from tests.helpers import create_topics, eventually, read_topic, served
from tests.integration.test_followup import settings_for

pytestmark = pytest.mark.integration

POLICY = """
version: exp-1
rules:
  - name: detractors
    when: {{category: detractor}}
    action: ticket
    holdout: {{share: 0.5, id: {id}}}
  - name: others
    action: thank_you
"""


def contribution(score: int) -> int:
    return 100 if score >= 9 else -100 if score <= 6 else 0


async def test_a_holdout_through_the_loop_assigns_holds_out_and_reports_what_the_answers_say(
    bootstrap: str, database_url: str, namespace: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    experiment = f"tickets-{run}"
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(id=experiment))
    settings = settings_for(bootstrap, database_url, namespace).model_copy(update={"policy": path})
    await create_topics(settings)
    pseudonyms = settings.pseudonyms()
    start = datetime.now(UTC) - timedelta(days=30)
    people = [f"{run}-p{i}" for i in range(40)]
    first = [(who, i % 7) for i, who in enumerate(people)]  # every one a detractor: the rule's experiment
    second = [(who, (i * 7) % 11) for i, who in enumerate(people[:30])]  # 30 answer again
    events = [
        ResponseSubmitted(response_id=f"{who}-{n}", respondent_id=who, score=score, channel="web",
                          answered_at=start + timedelta(days=n * 10), submitted_at=start + timedelta(days=n * 10))
        for n, answers in ((1, first), (2, second)) for who, score in answers
    ]  # fmt: skip
    arm = {
        who: arm_of(pseudonyms, experiment, pseudonyms.key(who), (("treated", 0.5), ("held_out", 0.5)))
        for who in people
    }
    assert set(arm.values()) == {"treated", "held_out"}

    app = create_app(settings)
    async with served(app, settings, spec(settings, app.state.policy)) as service:
        client = service.client
        # Every first answer delivered twice (a retry, a redelivery): one follow-up, one assignment each
        await service.publish(settings.topics.responses, events[: len(first)] + events[: len(first) : 3])

        async def routed() -> bool:
            return [(await client.get(f"/v1/followups/{who}-1")).status_code for who in people[-3:]] == [200] * 3

        await eventually(routed)
        await service.publish(settings.topics.responses, events[len(first) :] + events[: len(first) : 5])

        async def experiment_answer() -> dict:  # type: ignore[type-arg]
            return (await client.get(f"/v1/experiments/{experiment}")).json()

        async def resurveyed() -> bool:
            return sum(a["resurveyed"] for a in (await experiment_answer())["arms"]) == len(second)

        await eventually(resurveyed)
        for who in people:
            f = (await client.get(f"/v1/followups/{who}-1")).json()
            assert (f["experiment_id"], f["arm"]) == (experiment, arm[who])
            if arm[who] == "held_out":
                assert (f["status"], f["ticket_id"], f["kind"]) == ("held_out", None, "ticket")
                assert f["reason"] == f"experiment {experiment}: arm held_out"
            else:
                assert f["status"] == "created" and f["ticket_id"] is not None

        result = await experiment_answer()
        assert (result["running"], result["rule"], result["control"]) == (True, "detractors", "held_out")
        arms = {a["arm"]: a for a in result["arms"]}
        for name in ("treated", "held_out"):
            mine = [(who, s) for who, s in second if arm[who] == name]
            before = dict(first)
            changes = [contribution(s) - contribution(before[who]) for who, s in mine]
            assert arms[name]["assigned"] == sum(1 for who in people if arm[who] == name)
            assert arms[name]["resurveyed"] == len(mine)
            assert arms[name]["nps_change"]["points"] == pytest.approx(statistics.fmean(changes), abs=0.01)
        [effect] = result["effects"]
        expected = arms["treated"]["nps_change"]["points"] - arms["held_out"]["nps_change"]["points"]
        assert (effect["arm"], effect["against"]) == ("treated", "held_out")
        assert effect["effect"]["points"] == pytest.approx(expected, abs=0.02)
        low, high = effect["effect"]["anytime_ci95"]
        assert low < effect["effect"]["ci95"][0] and high > effect["effect"]["ci95"][1]
        assert effect["decided"] is False  # 30 people: nothing decided
        assert "not random" in result["naive"]["note"]
        outcomes = (await client.get("/v1/outcomes")).json()
        assert outcomes["difference_is"].startswith("an association, not an effect")
        [link] = [e for e in outcomes["experiments"] if e["experiment_id"] == experiment]
        assert (link["running"], link["results"]) == (True, f"/v1/experiments/{experiment}")
        listed = (await client.get("/v1/experiments")).json()["experiments"]
        assert [e for e in listed if e["experiment_id"] == experiment] == [result]
        for bad in (
            "/v1/experiments/Bad%20Id",
            f"/v1/experiments/{experiment}?effect_points=0",
            "/v1/experiments?effect_points=1.1754943508222875e-38",
            "/v1/experiments?effect_points=nan",
        ):
            assert (await client.get(bad)).status_code == 422, bad  # fmt: skip
        small = (await client.get(f"/v1/experiments/{experiment}", params={"effect_points": 0.5})).json()
        assert small["power"]["effect_points"] == 0.5
        missing = await client.get("/v1/experiments/nobody-ran-this")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")

        # The held-out people's first answers published FollowUpHeldOut, the others FollowUpCreated
        held = sum(1 for who in people if arm[who] == "held_out")
        records = await read_topic(bootstrap, settings.topics.followups, expect=len(events))
        decoded = [followup_events.validate_json(r.value) for r in records]
        firsts = [e for e in decoded if e.response_id.endswith("-1")]
        assert sum(1 for e in firsts if e.type == "FollowUpHeldOut") == held
        assert {e.arm for e in firsts if e.type == "FollowUpHeldOut"} == {"held_out"}

        # Erasure takes a person out of the experiment's results
        gone = next(who for who, _ in second if arm[who] == "treated")
        erased = RespondentErased(erasure_id=uuid.uuid4().hex, respondent_id=gone, requested_at=datetime.now(UTC))
        await service.publish(settings.topics.responses, [erased])

        async def out() -> bool:
            treated = next(a for a in (await experiment_answer())["arms"] if a["arm"] == "treated")
            return treated["assigned"] == arms["treated"]["assigned"] - 1

        await eventually(out)
        async with service.loop.engine.connect() as conn:
            left = await conn.scalar(
                sa.text("SELECT count(*) FROM followup.experiment_assignments WHERE respondent_key = :k"),
                {"k": pseudonyms.key(gone)},
            )
        assert left == 0


async def test_a_start_or_reload_that_changes_a_recorded_experiment_s_arms_is_refused(
    bootstrap: str, database_url: str, namespace: str, tmp_path: Path
) -> None:
    experiment = f"tickets-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(id=experiment))
    holder = PolicyHolder(path)
    engine = make_engine(database_url)
    try:
        await checking_experiments(holder)(engine)  # recorded: 0.5 / 0.5
        await checking_experiments(holder)(engine)  # the same arms again: fine

        path.write_text(POLICY.format(id=experiment).replace("share: 0.5", "share: 0.2").replace("exp-1", "exp-2"))
        refused_before = metrics.POLICY_RELOADS.labels("refused")._value.get()
        await reload_policy(holder, engine)
        assert holder.current.version == "exp-1"  # the running policy stays
        assert metrics.POLICY_RELOADS.labels("refused")._value.get() == refused_before + 1

        changed = PolicyHolder(path)  # a restart with the changed file
        with pytest.raises(PolicyError) as caught:
            await checking_experiments(changed)(engine)
        [problem] = caught.value.problems
        assert "treated 0.5 (ticket), held_out 0.5 (none)" in problem.problem
        assert "treated 0.8 (ticket), held_out 0.2 (none)" in problem.problem and "new id" in problem.problem

        path.write_text(POLICY.format(id=f"{experiment}-v2").replace("share: 0.5", "share: 0.2"))
        await reload_policy(holder, engine)  # a new id: a new experiment, taken
        assert [e.experiment_id for e in holder.current.experiments] == [f"{experiment}-v2"]
    finally:
        await engine.dispose()
