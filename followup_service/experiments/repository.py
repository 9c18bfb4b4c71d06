"""Experiments' SQL: the experiments a policy ran with their arms as first recorded, each person's
arm from the answer that assigned them, and the pairs the results are made of. Never commits."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.experiments.estimators import Moments
from followup_service.experiments.results import ArmPeople
from followup_service.experiments.spec import Experiment
from followup_service.routing.domain import FollowUp
from followup_service.tables import SCHEMA
from shared.wire import Submitted


@dataclass(frozen=True, slots=True)
class Recorded:
    experiment_id: str
    arms: list[list[Any]]  # [[name, weight, action], ...]
    control: str
    rule: str
    policy_version: str
    started_at: datetime


async def record_experiments(
    conn: AsyncConnection, experiments: Sequence[Experiment], policy_version: str, now: datetime
) -> list[str]:
    """Record the policy's experiments not seen before; for those recorded already, why their arms
    differ from what was recorded (empty: the policy may run)."""
    if not experiments:
        return []
    await conn.execute(
        sa.text(
            f"""INSERT INTO {SCHEMA}.experiments (experiment_id, arms, control, rule, policy_version, started_at)
                SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:arms AS jsonb[]), CAST(:controls AS text[]),
                                     CAST(:rules AS text[]), CAST(:versions AS text[]), CAST(:at AS timestamptz[]))
                ON CONFLICT (experiment_id) DO NOTHING"""
        ),
        {
            "ids": [e.experiment_id for e in experiments],
            "arms": [json.dumps(e.recorded()) for e in experiments],
            "controls": [e.control for e in experiments],
            "rules": [e.rule for e in experiments],
            "versions": [policy_version] * len(experiments),
            "at": [now] * len(experiments),
        },
    )
    recorded = {r.experiment_id: r for r in await recorded_experiments(conn, [e.experiment_id for e in experiments])}
    problems = []
    for e in experiments:
        before = recorded[e.experiment_id]
        if before.arms != e.recorded() or before.control != e.control:
            problems.append(
                f"experiment {e.experiment_id} (rule {e.rule}): its arms were recorded as {_arms(before.arms)}, "
                f"control {before.control}, by policy {before.policy_version} on {before.started_at:%Y-%m-%d}; "
                f"this policy gives {_arms(e.recorded())}, control {e.control}. Changing the arms of a running "
                "experiment mixes people assigned under two designs: give the new design a new id"
            )
    return problems


def _arms(arms: list[list[Any]]) -> str:
    return ", ".join(f"{name} {weight:g} ({action})" for name, weight, action in arms)


async def recorded_experiments(conn: AsyncConnection, ids: Sequence[str] | None = None) -> list[Recorded]:
    """Every experiment recorded (or those of `ids`), the newest first."""
    rows = await conn.execute(
        sa.text(
            f"""SELECT experiment_id, arms, control, rule, policy_version, started_at FROM {SCHEMA}.experiments
                WHERE CAST(:ids AS text[]) IS NULL OR experiment_id = ANY(CAST(:ids AS text[]))
                ORDER BY started_at DESC, experiment_id"""
        ),
        {"ids": list(ids) if ids is not None else None},
    )
    return [Recorded(*r) for r in rows]


Assignment = tuple[str, str, str, str, int, datetime]  # experiment, respondent key, arm, response, score, at


def assignments_of(followups: Sequence[FollowUp], key: Callable[[str], str]) -> list[Assignment]:
    """The rows a batch's follow-ups with an experiment assign: a person's first answer in an
    experiment assigns them (a later one, here or in the table, changes nothing)."""
    rows: dict[tuple[str, str], Assignment] = {}
    for f in followups:
        if f.experiment_id is None or f.arm is None:
            continue
        response = f.response
        rkey = key(response.respondent_id)
        at = response.submitted_at if isinstance(response, Submitted) else response.revised_at
        rows.setdefault(
            (f.experiment_id, rkey), (f.experiment_id, rkey, f.arm, response.response_id, response.score, at)
        )
    return list(rows.values())


async def insert_assignments(conn: AsyncConnection, rows: Sequence[Assignment]) -> None:
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    await conn.execute(
        sa.text(
            f"""INSERT INTO {SCHEMA}.experiment_assignments
                    (experiment_id, respondent_key, arm, response_id, score, assigned_at)
                SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:keys AS text[]), CAST(:arms AS text[]),
                                     CAST(:responses AS text[]), CAST(:scores AS smallint[]),
                                     CAST(:at AS timestamptz[]))
                ON CONFLICT (experiment_id, respondent_key) DO NOTHING"""
        ),
        dict(zip(("ids", "keys", "arms", "responses", "scores", "at"), columns, strict=True)),
    )


_VALUE = "CASE {0} WHEN 'promoter' THEN 100 WHEN 'detractor' THEN -100 ELSE 0 END"


async def arm_people(conn: AsyncConnection, experiment_id: str) -> dict[str, ArmPeople]:
    """Each arm's people (arms nobody is in yet are absent)."""
    counts = await conn.execute(
        sa.text(
            f"""SELECT arm, count(*), min(assigned_at) FROM {SCHEMA}.experiment_assignments
                WHERE experiment_id = :id GROUP BY arm"""
        ),
        {"id": experiment_id},
    )
    people = {arm: ArmPeople(arm, int(n), first, []) for arm, n, first in counts}
    pairs = await conn.execute(
        sa.text(
            # The next answer: the earliest of those that followed the assigning one (two, when a
            # later answer arrived before an earlier one).
            f"""SELECT DISTINCT ON (a.respondent_key) a.arm, {_VALUE.format("t.previous_category")},
                       {_VALUE.format("t.new_category")}, t.answered_at, a.score
                FROM {SCHEMA}.experiment_assignments a
                JOIN {SCHEMA}.transitions t ON t.previous_response_id = a.response_id
                WHERE a.experiment_id = :id
                ORDER BY a.respondent_key, t.answered_at"""
        ),
        {"id": experiment_id},
    )
    for arm, before, after, at, score in pairs:
        people[arm].pairs.append((int(before), int(after), at, int(score)))
    return people


async def naive_moments(conn: AsyncConnection, since: datetime) -> tuple[Moments, Moments]:
    """What the outcomes report compares, over everyone who answered again since `since` (the
    experiment's start): the change of those whose previous answer was followed up, and of the rest."""
    rows = await conn.execute(
        sa.text(
            f"""SELECT followup_status = 'created' AND followup_kind <> 'none' AS followed, count(*),
                       avg(d), coalesce(var_samp(d), 0)
                FROM (SELECT *, {_VALUE.format("new_category")} - {_VALUE.format("previous_category")} AS d
                      FROM {SCHEMA}.transitions WHERE answered_at >= :since) t
                GROUP BY 1"""
        ),
        {"since": since},
    )
    found = {bool(followed): Moments(int(n), float(mean), float(var) * (int(n) - 1)) for followed, n, mean, var in rows}
    return found.get(True, Moments()), found.get(False, Moments())


async def forget_assignments(conn: AsyncConnection, params: Mapping[str, object]) -> int:
    """An erased person leaves every experiment's results (their transitions go with the outcomes'):
    `params` the erasure's keys and times, as erasure.forget gives them."""
    result = await conn.execute(
        sa.text(
            f"""DELETE FROM {SCHEMA}.experiment_assignments a
                USING unnest(CAST(:keys AS text[]), CAST(:times AS timestamptz[])) AS e(k, at)
                WHERE a.respondent_key = e.k AND a.assigned_at <= e.at"""
        ),
        params,
    )
    return int(result.rowcount)
