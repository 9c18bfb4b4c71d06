"""Follow-up's API: look up what a response was routed to."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Path
from pydantic import BaseModel

from followup_service import consumer, repository
from followup_service.settings import FollowUpSettings
from shared.events import FollowUpKind
from shared.http import ProblemError, create_base_app, health_router
from shared.service import Resources, consuming_lifespan, resources


class FollowUpAnswer(BaseModel):
    followup_id: str
    kind: FollowUpKind
    response_id: str
    respondent_id: str
    score: int
    created_at: datetime
    ticket_id: str | None
    ticket_status: str | None


def create_app(settings: FollowUpSettings | None = None) -> FastAPI:
    settings = settings or FollowUpSettings()
    app = create_base_app("followup", "NPS follow-up", consuming_lifespan(settings, consumer.spec(settings)))
    app.include_router(health_router(lambda: app.state.resources.checks()))

    @app.get(
        "/v1/followups/{response_id}",
        response_model=FollowUpAnswer,
        tags=["follow-ups"],
        responses={404: {"description": "no follow-up for that response (yet)"}},
    )
    async def get_followup(
        res: Annotated[Resources, Depends(resources)],
        response_id: Annotated[str, Path(max_length=128)],
    ) -> FollowUpAnswer:
        async with res.engine.connect() as conn:
            row = await repository.get_by_response(conn, response_id)
        if row is None:
            raise ProblemError(404, "not_found", "no follow-up for that response (yet)")
        return FollowUpAnswer.model_validate(row._mapping)

    return app
