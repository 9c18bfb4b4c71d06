"""Referrals' API: record a sign-up that came through a code; codes issued and their conversions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from followup_service.deps import SegmentFilter, WindowDays, time_and_segment
from followup_service.referrals import repository
from shared.auth import KEY_PROBLEMS, requires
from shared.problems import Problem, ProblemError
from shared.problems import invalid_field as _invalid
from shared.service import ReadConnection
from shared.validation import PLAIN

ReferralCode = Annotated[
    str, Path(pattern=r"^r[a-z2-7]{16}$", description="a referral code, as FollowUpCreated gave it")
]


class ConversionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversion_id: str = Field(
        min_length=1, max_length=128, pattern=PLAIN, description="your id for the sign-up: a retry records it once"
    )
    converted_at: AwareDatetime | None = Field(default=None, description="when they signed up; default now")


class Conversion(BaseModel):
    conversion_id: str
    code: str
    recorded: bool = Field(description="false when this conversion_id was already recorded")


class ReferralStatsAnswer(BaseModel):
    window: str
    segment: str
    codes_issued: int
    conversions: int
    converting_codes: int
    conversion_rate: float | None = Field(description="converting codes / codes issued; null with none issued")


router = APIRouter(tags=["referrals"], responses=KEY_PROBLEMS)


@router.post(
    "/v1/referrals/{code}/conversions",
    response_model=Conversion,
    status_code=201,
    responses={
        200: {"model": Conversion, "description": "already recorded (a retry)"},
        404: {"model": Problem, "description": "`unknown_referral_code`"},
        409: {
            "model": Problem,
            "description": "`conversion_conflict`: that conversion_id was recorded for another code",
        },
    },
)
async def record_conversion(
    request: Request,
    code: ReferralCode,
    body: ConversionIn,
    response: Response,
    _: Annotated[str, requires("referrals:write")],
) -> Conversion:
    """A sign-up that came through a referral code (idempotent on `conversion_id`)."""
    now = datetime.now(UTC)
    if body.converted_at is not None and body.converted_at > now + timedelta(minutes=5):
        raise _invalid("converted_at", "is in the future")
    async with request.app.state.engine.begin() as conn:
        if not await repository.code_exists(conn, code):
            raise ProblemError(404, "unknown_referral_code", "no follow-up gave out that referral code")
        new, recorded_for = await repository.record_conversion(conn, body.conversion_id, code, body.converted_at or now)
    if recorded_for != code:
        raise ProblemError(409, "conversion_conflict", "that conversion_id was recorded for another referral code")
    if not new:
        response.status_code = 200
    return Conversion(conversion_id=body.conversion_id, code=code, recorded=new)


@router.get("/v1/referrals/stats", response_model=ReferralStatsAnswer, dependencies=[requires("followups:read")])
async def referral_stats(
    conn: ReadConnection,
    window: WindowDays = "30d",
    segment: SegmentFilter = "all",
) -> ReferralStatsAnswer:
    """Referral codes issued in the window, the sign-ups they brought, and the conversion rate."""
    stats = await repository.referral_stats(conn, *time_and_segment(window, segment))
    return ReferralStatsAnswer(
        window=window,
        segment=segment,
        codes_issued=stats.codes_issued,
        conversions=stats.conversions,
        converting_codes=stats.converting_codes,
        conversion_rate=round(stats.converting_codes / stats.codes_issued, 4) if stats.codes_issued else None,
    )
