"""Outcomes' API: did the people followed up move, against those who were not?"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from followup_service.deps import SegmentFilter, WindowDays, time_and_segment
from followup_service.experiments import repository as experiments_repository
from followup_service.outcomes import domain, repository
from shared.auth import KEY_PROBLEMS, requires
from shared.service import ReadConnection


class ShareAnswer(BaseModel):
    n: int = Field(description="how many could move (e.g. the detractors before)")
    moved: int
    share: float | None
    ci95: list[float] | None = Field(description="Wilson 95% interval of the share")


class ChangeAnswer(BaseModel):
    n: int
    points: float | None = Field(description="mean NPS change of these people, in points (-200..200)")
    ci95: list[float] | None


class GroupAnswer(BaseModel):
    followup: str = Field(description="what the previous answer got: its kind, or `none` (suppressed, failed, no rule)")
    resurveyed: int
    detractors_moved_up: ShareAnswer = Field(description="detractor before, passive or promoter now")
    passives_to_promoters: ShareAnswer
    nps_change: ChangeAnswer


class ExperimentLink(BaseModel):
    experiment_id: str
    rule: str
    running: bool
    started_at: datetime
    results: str = Field(description="where its results are")


class OutcomesAnswer(BaseModel):
    window: str
    segment: str
    groups: list[GroupAnswer]
    followed_up: ChangeAnswer
    not_followed_up: ChangeAnswer
    difference: ChangeAnswer = Field(
        description="followed up minus not followed up: an association, not the effect of following up (who "
        "was followed up was not random, and people who answered badly tend to answer better the next time "
        "anyway); an experiment measures the effect (GET /v1/experiments)"
    )
    difference_is: str = "an association, not an effect: see experiments"
    experiments: list[ExperimentLink] = Field(
        description="the experiments policies ran, the running ones first: their results measure effects"
    )


def _share(s: domain.Share) -> ShareAnswer:
    interval = [s.low, s.high] if s.low is not None and s.high is not None else None
    return ShareAnswer(n=s.n, moved=s.moved, share=s.share, ci95=interval)


def _change(c: domain.Change) -> ChangeAnswer:
    interval = [c.low, c.high] if c.low is not None and c.high is not None else None
    return ChangeAnswer(n=c.n, points=c.points, ci95=interval)


router = APIRouter(tags=["outcomes"], responses=KEY_PROBLEMS)


@router.get("/v1/outcomes", response_model=OutcomesAnswer, dependencies=[requires("followups:read")])
async def get_outcomes(
    request: Request,
    conn: ReadConnection,
    window: WindowDays = "180d",
    segment: SegmentFilter = "all",
) -> OutcomesAnswer:
    """People who answered again in the window, by the follow-up their previous answer got: how many
    moved up, and the NPS change of those followed up against those who were not (an association:
    the experiments listed measure effects)."""
    cells = await repository.outcome_cells(conn, *time_and_segment(window, segment))
    result = domain.report(cells)
    running = request.app.state.policy.current.experiment_ids
    recorded = await experiments_repository.recorded_experiments(conn)
    links = [
        ExperimentLink(
            experiment_id=e.experiment_id,
            rule=e.rule,
            running=e.experiment_id in running,
            started_at=e.started_at,
            results=f"/v1/experiments/{e.experiment_id}",
        )
        for e in sorted(recorded, key=lambda e: e.experiment_id not in running)
    ]
    return OutcomesAnswer(
        window=window,
        segment=segment,
        groups=[
            GroupAnswer(
                followup=g.group,
                resurveyed=g.resurveyed,
                detractors_moved_up=_share(g.detractors_up),
                passives_to_promoters=_share(g.passives_up),
                nps_change=_change(g.nps_change),
            )
            for g in result.groups
        ],
        followed_up=_change(result.followed_up),
        not_followed_up=_change(result.not_followed_up),
        difference=_change(result.difference),
        experiments=links,
    )
