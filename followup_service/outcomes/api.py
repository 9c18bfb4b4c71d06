"""Outcomes' API: did the people followed up move, against those who were not?"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from followup_service.deps import SegmentFilter, WindowDays, time_and_segment
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


class OutcomesAnswer(BaseModel):
    window: str
    segment: str
    groups: list[GroupAnswer]
    followed_up: ChangeAnswer
    not_followed_up: ChangeAnswer
    difference: ChangeAnswer = Field(description="followed up minus not followed up: what following up is worth")


def _share(s: domain.Share) -> ShareAnswer:
    interval = [s.low, s.high] if s.low is not None and s.high is not None else None
    return ShareAnswer(n=s.n, moved=s.moved, share=s.share, ci95=interval)


def _change(c: domain.Change) -> ChangeAnswer:
    interval = [c.low, c.high] if c.low is not None and c.high is not None else None
    return ChangeAnswer(n=c.n, points=c.points, ci95=interval)


router = APIRouter(tags=["outcomes"], responses=KEY_PROBLEMS)


@router.get("/v1/outcomes", response_model=OutcomesAnswer, dependencies=[requires("followups:read")])
async def get_outcomes(
    conn: ReadConnection,
    window: WindowDays = "180d",
    segment: SegmentFilter = "all",
) -> OutcomesAnswer:
    """People who answered again in the window, by the follow-up their previous answer got: how many
    moved up, and the NPS change of those followed up against those who were not."""
    cells = await repository.outcome_cells(conn, *time_and_segment(window, segment))
    result = domain.report(cells)
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
    )
