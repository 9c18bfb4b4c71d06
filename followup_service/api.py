"""Follow-up's API: look up what a response was routed to."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from followup_service import repository
from shared.auth import KEY_PROBLEMS, requires
from shared.events import FollowUpKind
from shared.http import ProblemError
from shared.service import ReadConnection
from shared.validation import PLAIN


class FollowUpAnswer(BaseModel):
    followup_id: str
    kind: FollowUpKind
    response_id: str
    respondent_id: str | None = Field(description="null once the respondent was erased")
    score: int
    created_at: datetime
    ticket_id: str | None
    ticket_status: str | None


router = APIRouter(tags=["follow-ups"], dependencies=[requires("followups:read")], responses=KEY_PROBLEMS)


@router.get(
    "/v1/followups/{response_id}",
    response_model=FollowUpAnswer,
    responses={404: {"description": "no follow-up for that response (yet)"}},
)
async def get_followup(
    conn: ReadConnection, response_id: Annotated[str, Path(min_length=1, max_length=128, pattern=PLAIN)]
) -> FollowUpAnswer:
    row = await repository.get_by_response(conn, response_id)
    if row is None:
        raise ProblemError(404, "not_found", "no follow-up for that response (yet)")
    return FollowUpAnswer.model_validate(row._mapping)
