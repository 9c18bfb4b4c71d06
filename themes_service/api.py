"""The themes API: per theme, how often it is mentioned and the NPS of those who mention it; which
themes drive a drop; a theme's share over time. Scope `scores:read`, like scoring's queries."""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from scoring_service.api import Interval, days_of, figures
from scoring_service.deps import AsOf, Segment, Span, WindowQ, invalid_query, window_days
from shared.auth import KEY_PROBLEMS, requires
from shared.nps import Counts, normal_cdf
from shared.service import ReadConnection
from shared.windows import DayRange, preceding, series, window
from themes_service.repository import SCHEMA, THEMES, theme_sums
from themes_service.taxonomy import ALL, COMMENTED, Taxonomy

CategoryQ = Literal["promoter", "passive", "detractor"]


async def taxonomy(request: Request) -> Taxonomy:
    found: Taxonomy = request.app.state.taxonomy
    return found


Themes = Annotated[Taxonomy, Depends(taxonomy)]


class Group(BaseModel):
    n: int
    nps: float | None
    ci95: Interval


class ThemeRow(BaseModel):
    theme: str
    label: str
    mentions: int = Field(description="responses (of `category`, if given) whose comment mentions the theme")
    share: float | None = Field(description="mentions / commented responses (of `category`, if given)")
    promoters: int
    passives: int
    detractors: int
    mentioning: Group = Field(description="the NPS of the segment's respondents who mention the theme")
    not_mentioning: Group = Field(description="...and of everyone else in the segment (with or without a comment)")
    impact: float | None = Field(
        description="NPS points the segment would gain if those who mention it scored like the rest: "
        "share of all responses x (NPS not mentioning - NPS mentioning)"
    )


class ThemesAnswer(BaseModel):
    segment: str
    window: str
    first_day: date
    last_day: date
    category: CategoryQ | None
    responses: int
    commented: int
    taxonomy_version: str
    themes: list[ThemeRow]


class Driver(BaseModel):
    theme: str
    label: str
    detractor_share_now: float | None = Field(description="share of the current window's commenting detractors")
    detractor_share_before: float | None
    rise_points: float | None = Field(description="the rise of that share, in percentage points")
    z: float | None = Field(description="two-proportion z (pooled), current vs baseline detractor comments")
    p_value: float | None = Field(description="one-sided: the share rose")
    overall_share_now: float | None = Field(description="share of all commenting responses, current window")
    overall_share_before: float | None


class DriversAnswer(BaseModel):
    segment: str
    window: str
    baseline: str
    current_first_day: date
    current_last_day: date
    baseline_first_day: date
    baseline_last_day: date
    detractor_comments_now: int
    detractor_comments_before: int
    drivers: list[Driver]


class SharePoint(BaseModel):
    first_day: date
    last_day: date
    mentions: int
    commented: int
    share: float | None


class ThemeSeries(BaseModel):
    theme: str
    segment: str
    interval: str
    first_day: date
    last_day: date
    points: list[SharePoint]


router = APIRouter(tags=["themes"], dependencies=[requires("scores:read")], responses=KEY_PROBLEMS)


def _of(counts: Counts, category: CategoryQ | None) -> int:
    if category is None:
        return counts.n
    return dict(counts.by_category())[category]


def _group(counts: Counts) -> Group:
    f = figures(counts)
    return Group(n=f["n"], nps=f["nps"], ci95=f["ci95"])


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@router.get("/v1/themes", response_model=ThemesAnswer, summary="Each theme's mentions and the NPS of who mentions it")
async def get_themes(
    conn: ReadConnection,
    themes: Themes,
    segment: Segment,
    as_of: AsOf,
    window: WindowQ = "30d",
    category: Annotated[CategoryQ | None, Query(description="only comments of this category")] = None,
) -> ThemesAnswer:
    days = _window(as_of, window)
    found = await theme_sums(conn, [f"{t}@{segment}" for t in [ALL, COMMENTED, *themes.themes]], days)
    everyone, commented = found.get(f"{ALL}@{segment}", Counts()), found.get(f"{COMMENTED}@{segment}", Counts())
    rows = []
    for theme in themes.themes:
        counts = found.get(f"{theme}@{segment}", Counts())
        rest = everyone - counts
        mentioning, others = counts.nps, rest.nps
        impact = None
        if mentioning is not None and others is not None and everyone.n:
            impact = counts.n / everyone.n * (others - mentioning)
        rows.append(
            ThemeRow(
                theme=theme,
                label=themes.labels[theme],
                mentions=_of(counts, category),
                share=_share(_of(counts, category), _of(commented, category)),
                promoters=counts.promoters,
                passives=counts.passives,
                detractors=counts.detractors,
                mentioning=_group(counts),
                not_mentioning=_group(rest),
                impact=None if impact is None else round(impact, 3),
            )
        )
    rows.sort(key=lambda r: (-(r.impact if r.impact is not None else -math.inf), -r.mentions, r.theme))
    return ThemesAnswer(
        segment=segment,
        window=window,
        **days_of(days),
        category=category,
        responses=everyone.n,
        commented=_of(commented, category),
        taxonomy_version=themes.version,
        themes=rows,
    )


def _window(as_of: date, text: str, field: str = "window") -> DayRange:
    return window(as_of, window_days(text, field))


@router.get(
    "/v1/themes/drivers",
    response_model=DriversAnswer,
    summary="The themes whose share among detractors rose most from the baseline: why the score dropped",
)
async def get_drivers(
    conn: ReadConnection,
    themes: Themes,
    segment: Segment,
    as_of: AsOf,
    window: WindowQ = "7d",
    baseline: Annotated[str, Query(description="length of the baseline window that ends the day before")] = "28d",
) -> DriversAnswer:
    current = _window(as_of, window)
    before = preceding(current, window_days(baseline, "baseline"))
    keys = [f"{t}@{segment}" for t in [COMMENTED, *themes.themes]]
    now, then = await theme_sums(conn, keys, current), await theme_sums(conn, keys, before)
    d_now = now.get(f"{COMMENTED}@{segment}", Counts())
    d_then = then.get(f"{COMMENTED}@{segment}", Counts())
    drivers = []
    for theme in themes.themes:
        a, b = now.get(f"{theme}@{segment}", Counts()), then.get(f"{theme}@{segment}", Counts())
        share_now, share_then = _share(a.detractors, d_now.detractors), _share(b.detractors, d_then.detractors)
        z = p = None
        if share_now is not None and share_then is not None:
            pooled = (a.detractors + b.detractors) / (d_now.detractors + d_then.detractors)
            spread = math.sqrt(pooled * (1 - pooled) * (1 / d_now.detractors + 1 / d_then.detractors))
            if spread > 0:
                z = (share_now - share_then) / spread
                p = 1 - normal_cdf(z)
        drivers.append(
            Driver(
                theme=theme,
                label=themes.labels[theme],
                detractor_share_now=share_now,
                detractor_share_before=share_then,
                rise_points=None
                if share_now is None or share_then is None
                else round(100 * (share_now - share_then), 2),
                z=None if z is None else round(z, 4),
                p_value=p,
                overall_share_now=_share(a.n, d_now.n),
                overall_share_before=_share(b.n, d_then.n),
            )
        )
    drivers.sort(key=lambda d: (-(d.rise_points if d.rise_points is not None else -math.inf), d.theme))
    return DriversAnswer(
        segment=segment,
        window=window,
        baseline=baseline,
        current_first_day=current.first,
        current_last_day=current.last,
        baseline_first_day=before.first,
        baseline_last_day=before.last,
        detractor_comments_now=d_now.detractors,
        detractor_comments_before=d_then.detractors,
        drivers=drivers,
    )


@router.get(
    "/v1/themes/series", response_model=ThemeSeries, summary="A theme's share of comments per day, week or month"
)
async def get_series(
    conn: ReadConnection,
    themes: Themes,
    span: Span,
    segment: Segment,
    theme: Annotated[str, Query(description="a theme of the taxonomy", min_length=1, max_length=40)],
) -> ThemeSeries:
    if theme not in themes.labels:
        raise invalid_query("theme", f"unknown theme {theme!r}: the taxonomy has {', '.join(themes.themes)}")
    mentioned, commented = f"{theme}@{segment}", f"{COMMENTED}@{segment}"
    rows = await conn.execute(
        sa.text(
            f"""SELECT segment, day, promoters, passives, detractors FROM {SCHEMA}.{THEMES.daily}
                WHERE segment = ANY(CAST(:keys AS text[])) AND day BETWEEN :first AND :last"""
        ),
        {"keys": [mentioned, commented], "first": span.days.first, "last": span.days.last},
    )
    per_day: dict[str, dict[date, Counts]] = {mentioned: {}, commented: {}}
    for r in rows:
        per_day[r.segment][r.day] = Counts(r.promoters, r.passives, r.detractors)
    points = [
        SharePoint(
            first_day=bucket.first,
            last_day=bucket.last,
            mentions=mentions.n,
            commented=all_comments.n,
            share=_share(mentions.n, all_comments.n),
        )
        for (bucket, mentions), (_, all_comments) in zip(
            series(per_day[mentioned], span.days, span.interval),
            series(per_day[commented], span.days, span.interval),
            strict=True,
        )
    ]
    return ThemeSeries(
        theme=theme, segment=segment, interval=span.interval, first_day=span.days.first, last_day=span.days.last,
        points=points,
    )  # fmt: skip
