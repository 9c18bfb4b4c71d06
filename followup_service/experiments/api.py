"""Experiments' API: per experiment, its arms, each arm's effect against control with an interval
that may be read every day, and how many people it still needs (docs/experiments.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.experiments import repository, results
from followup_service.experiments.estimators import Estimate
from followup_service.experiments.spec import NAME_PATTERN, Arm
from shared.auth import KEY_PROBLEMS, requires
from shared.problems import ProblemError
from shared.service import ReadConnection

NAIVE_NOTE = (
    "not an effect: everyone who answered again since the experiment started, followed up or not, as "
    "GET /v1/outcomes compares them; who was followed up was not random"
)
FIXED_NOTE = "ci95 is valid at one planned look; anytime_ci95 stays valid however often it is read"


class Interval(BaseModel):
    n: int = Field(description="re-surveyed people it is computed from")
    points: float = Field(description="NPS points (a contribution moves between -100 and +100)")
    ci95: list[float] = Field(description="95% interval [low, high]")


def _interval(e: Estimate | None) -> Interval | None:
    return None if e is None else Interval(n=e.n, points=round(e.points, 2), ci95=[round(e.low, 2), round(e.high, 2)])


class ArmAnswer(BaseModel):
    arm: str
    weight: float
    action: str = Field(description="what the arm gets: the rule's action, or `none` (held out)")
    assigned: int = Field(description="people whose answer put them in this arm")
    resurveyed: int = Field(description="of them, people who answered again")
    nps_change: Interval | None = Field(
        description="the mean change of their NPS contribution from the assigning answer to the next; "
        "null below two people"
    )


class EffectInterval(Interval):
    anytime_ci95: list[float] = Field(description="the confidence sequence: valid read every day")


class EffectAnswer(BaseModel):
    arm: str
    against: str = Field(description="the control arm")
    effect: EffectInterval | None = Field(description="the arm's change minus control's; null below two people each")
    cuped: Interval | None = Field(description="the same adjusted for the assigning answer's score (CUPED)")
    decided: bool = Field(
        description=f"the anytime interval excludes zero, with at least {results.MIN_PER_ARM} people in each arm"
    )
    verdict: str


class NaiveAnswer(BaseModel):
    followed_up_minus_not: Interval | None
    note: str = NAIVE_NOTE


class PowerAnswer(BaseModel):
    effect_points: float
    needed_per_arm: int | None = Field(description="re-surveyed people per arm for 80% power; null: no spread yet")
    have_per_arm: int = Field(description="the smallest arm's re-surveyed people")
    enough_by: date | None = Field(description="at the pace so far; null: enough already, or no pace yet")


class ExperimentAnswer(BaseModel):
    experiment_id: str
    rule: str
    running: bool = Field(description="the running policy has it; false: it ended (its results stay)")
    started_at: datetime
    policy_version: str = Field(description="the policy that first ran it")
    control: str
    arms: list[ArmAnswer]
    effects: list[EffectAnswer]
    naive: NaiveAnswer
    power: PowerAnswer
    note: str = FIXED_NOTE


class ExperimentsAnswer(BaseModel):
    experiments: list[ExperimentAnswer]


router = APIRouter(tags=["experiments"], dependencies=[requires("followups:read")], responses=KEY_PROBLEMS)


EffectPoints = Annotated[
    float, Query(ge=0.5, le=200, description="the effect the power is worked out for, in NPS points (0.5-200)")
]


@router.get("/v1/experiments", response_model=ExperimentsAnswer)
async def list_experiments(
    request: Request, conn: ReadConnection, effect_points: EffectPoints = results.DEFAULT_EFFECT_POINTS
) -> ExperimentsAnswer:
    """Every experiment a policy ran, the newest first, with its results."""
    running = request.app.state.policy.current.experiment_ids
    recorded = await repository.recorded_experiments(conn)
    return ExperimentsAnswer(experiments=[await _answer(conn, r, running, effect_points) for r in recorded])


@router.get(
    "/v1/experiments/{experiment_id}",
    response_model=ExperimentAnswer,
    responses={404: {"description": "no policy ran an experiment with that id"}},
)
async def get_experiment(
    request: Request,
    conn: ReadConnection,
    experiment_id: Annotated[str, Path(pattern=NAME_PATTERN)],
    effect_points: EffectPoints = results.DEFAULT_EFFECT_POINTS,
) -> ExperimentAnswer:
    recorded = await repository.recorded_experiments(conn, [experiment_id])
    if not recorded:
        raise ProblemError(404, "not_found", f"no policy ran an experiment {experiment_id!r}")
    return await _answer(conn, recorded[0], request.app.state.policy.current.experiment_ids, effect_points)


def _verdict(e: results.EffectResult) -> str:
    if e.decided and e.anytime is not None:
        direction = "better" if e.anytime.low > 0 else "worse"
        return f"decided: {e.arm} does {direction} than {e.against}"
    if e.effect is None:
        return "not yet decided: too few people answered again"
    return "not yet decided"


async def _answer(
    conn: AsyncConnection, recorded: repository.Recorded, running: frozenset[str], effect_points: float
) -> ExperimentAnswer:
    arms = [Arm(name, float(weight), action, None) for name, weight, action in recorded.arms]
    people = await repository.arm_people(conn, recorded.experiment_id)
    naive = await repository.naive_moments(conn, recorded.started_at)
    found = results.results(arms, recorded.control, people, datetime.now(UTC).date(), effect_points, naive)
    return ExperimentAnswer(
        experiment_id=recorded.experiment_id,
        rule=recorded.rule,
        running=recorded.experiment_id in running,
        started_at=recorded.started_at,
        policy_version=recorded.policy_version,
        control=recorded.control,
        arms=[
            ArmAnswer(
                arm=a.arm,
                weight=a.weight,
                action=a.action,
                assigned=a.assigned,
                resurveyed=a.resurveyed,
                nps_change=_interval(a.change),
            )
            for a in found.arms
        ],
        effects=[
            EffectAnswer(
                arm=e.arm,
                against=e.against,
                effect=None
                if e.effect is None or e.anytime is None
                else EffectInterval(
                    n=e.effect.n,
                    points=round(e.effect.points, 2),
                    ci95=[round(e.effect.low, 2), round(e.effect.high, 2)],
                    anytime_ci95=[round(e.anytime.low, 2), round(e.anytime.high, 2)],
                ),
                cuped=_interval(e.cuped),
                decided=e.decided,
                verdict=_verdict(e),
            )
            for e in found.effects
        ],
        naive=NaiveAnswer(followed_up_minus_not=_interval(found.naive)),
        power=PowerAnswer(
            effect_points=found.power.effect_points,
            needed_per_arm=found.power.needed_per_arm,
            have_per_arm=found.power.have_per_arm,
            enough_by=found.power.enough_by,
        ),
    )
