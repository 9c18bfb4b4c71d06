"""Contact rules' API: opt a person out and in; may this person be surveyed or contacted now?"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from followup_service.contact import repository
from followup_service.contact.domain import ContactRules
from followup_service.tables import SCHEMA
from shared import audit, outbox
from shared.auth import KEY_PROBLEMS, requires
from shared.events import ContactChanged
from shared.outbox import Outgoing
from shared.service import ReadConnection
from shared.validation import PLAIN

RespondentId = Annotated[str, Path(min_length=1, max_length=128, pattern=PLAIN)]


class OptOut(BaseModel):
    respondent_id: str
    opted_out: bool
    changed: bool = Field(description="false when it already was so")


class Contact(BaseModel):
    respondent_id: str
    may_survey: bool = Field(description="whether a product app may show this person the NPS prompt now")
    survey_eligible_at: datetime | None = Field(description="from when, if not now (null: never, or now)")
    may_contact: bool = Field(description="whether a follow-up message may reach this person now")
    contact_eligible_at: datetime | None = Field(description="from when, if not now (null: never, or now)")
    reasons: list[Literal["opted_out", "erased", "surveyed_recently", "throttled"]]


router = APIRouter(tags=["contact rules"], responses=KEY_PROBLEMS)


async def _opt(request: Request, respondent_id: str, actor: str, out: bool) -> OptOut:
    key = request.app.state.pseudonyms.key(respondent_id)
    now = datetime.now(UTC)
    async with request.app.state.engine.begin() as conn:
        changed = await repository.set_opt_out(conn, key, now if out else None)
        if changed:
            action = "respondent.opted_out" if out else "respondent.opted_in"
            await audit.record(conn, actor, action, key[:16])  # the key's prefix: never the person's id
            # Ingest's prompt follows it (nps.contact.v1), published once this commits.
            event = ContactChanged(respondent_id=respondent_id, opted_out=out, changed_at=now, source=actor)
            topic = request.app.state.settings.topics.contact
            await outbox.enqueue(conn, SCHEMA, [Outgoing(topic, respondent_id.encode(), event.to_bytes())])
    return OptOut(respondent_id=respondent_id, opted_out=out, changed=changed)


@router.post("/v1/respondents/{respondent_id}/opt-out", response_model=OptOut)
async def opt_out(
    request: Request, respondent_id: RespondentId, actor: Annotated[str, requires("contact:write")]
) -> OptOut:
    """The person gets no follow-up message from now on (their tickets still reach support)."""
    return await _opt(request, respondent_id, actor, out=True)


@router.delete("/v1/respondents/{respondent_id}/opt-out", response_model=OptOut)
async def opt_in(
    request: Request, respondent_id: RespondentId, actor: Annotated[str, requires("contact:write")]
) -> OptOut:
    """The person may receive follow-up messages again (within the contact rules)."""
    return await _opt(request, respondent_id, actor, out=False)


@router.get("/v1/respondents/{respondent_id}/contact", response_model=Contact, dependencies=[requires("contact:read")])
async def contact(request: Request, conn: ReadConnection, respondent_id: RespondentId) -> Contact:
    """May this person be surveyed, or sent a follow-up message, now? If not, why, and from when."""
    settings = request.app.state.settings
    rules: ContactRules = settings.contact_rules()
    key = request.app.state.pseudonyms.key(respondent_id)
    now = datetime.now(UTC)
    state = await repository.contact_state(conn, key)
    history = (await repository.contact_histories(conn, [key], now - rules.lookback))[key]
    reasons: list[Literal["opted_out", "erased", "surveyed_recently", "throttled"]] = []
    if state.opted_out_at is not None:
        reasons.append("opted_out")
    if state.erased_at is not None:
        reasons.append("erased")
    survey_at = None
    if state.last_answer_at is not None:
        next_survey = state.last_answer_at + timedelta(days=settings.survey_min_days)
        if next_survey > now:
            survey_at = next_survey
            reasons.append("surveyed_recently")
    verdict = rules.verdict(history, "*", now, any_kind=True)
    if verdict.reason == "throttled":
        reasons.append("throttled")
    barred = state.opted_out_at is not None or state.erased_at is not None
    return Contact(
        respondent_id=respondent_id,
        may_survey=not barred and survey_at is None,
        survey_eligible_at=None if barred else survey_at,
        may_contact=not barred and verdict.allowed,
        contact_eligible_at=None if barred else verdict.eligible_at,
        reasons=reasons,
    )
