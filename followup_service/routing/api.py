"""Routing's API: what a response was routed to, and which rule of the running policy a response
would match."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from followup_service.routing import repository
from followup_service.routing.matching import Facts, IdentityName
from followup_service.routing.policy import Policy
from followup_service.tickets.domain import Priority
from shared.auth import KEY_PROBLEMS, requires
from shared.events import FollowUpKind
from shared.problems import ProblemError
from shared.service import ReadConnection
from shared.validation import PLAIN


class FollowUpAnswer(BaseModel):
    followup_id: str
    kind: FollowUpKind
    response_id: str
    respondent_id: str | None = Field(description="null once the respondent was erased")
    score: int
    created_at: datetime
    status: Literal["created", "failed", "suppressed", "held_out"] = Field(
        description="created: its message is out (FollowUpCreated); failed: its template failed on this response; "
        "suppressed: held back (see reason); held_out: the person's experiment arm gets nothing from the rule "
        "(FollowUpHeldOut)"
    )
    reason: str | None = Field(
        description="why it failed, or why it was suppressed: throttled, opted_out, erased, policy_none; "
        "held out: `experiment <id>: arm <arm>`"
    )
    eligible_at: datetime | None = Field(description="throttled: when a message of this kind would be allowed")
    rule: str | None = Field(description="the policy rule that decided (null: none matched, or erased)")
    policy_version: str | None
    experiment_id: str | None = Field(default=None, description="the rule's experiment (docs/experiments.md)")
    arm: str | None = Field(default=None, description="the person's arm in it")
    referral_code: str | None = Field(default=None, description="a referral follow-up's code")
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


class SampleResponse(BaseModel):
    """A response to try the policy on, and the person's history."""

    model_config = ConfigDict(extra="forbid")

    score: StrictInt = Field(ge=0, le=10)
    channel: str | None = Field(default=None, max_length=64)
    survey_id: str | None = Field(default=None, max_length=128)
    attributes: dict[str, Annotated[str, Field(max_length=256)]] = Field(default_factory=dict, max_length=32)
    comment: str | None = Field(default=None, max_length=5000)
    previous_score: StrictInt | None = Field(
        default=None, ge=0, le=10, description="the person's previous score; null: this is their first answer"
    )
    identity: IdentityName = Field(
        default="server", description="who vouches for the person: server, verified (a page's key) or anonymous"
    )


class Skipped(BaseModel):
    rule: str
    because: list[str]


class ArmAnswer(BaseModel):
    arm: str
    weight: float
    action: str = Field(description="`none`: held out")


class RuleExperiment(BaseModel):
    experiment_id: str
    control: str
    arms: list[ArmAnswer]


class PolicyAnswer(BaseModel):
    rule: str | None = Field(description="the rule that matched; null when none did (action `none`)")
    action: str
    priority: Priority | None = Field(description="for tickets")
    template: str | None
    policy_version: str
    first_contact_sla_s: float | None = Field(
        default=None, description="a ticket's time to first contact set by the rule, in seconds (null: its priority's)"
    )
    resolution_sla_s: float | None = Field(default=None, description="the same for the time to resolution")
    skipped: list[Skipped] = Field(description="the rules before it, and why each did not match")
    experiment: RuleExperiment | None = Field(
        default=None,
        description="the rule's holdout or experiment: the person's arm decides what they get (docs/experiments.md)",
    )


policy_router = APIRouter(tags=["policy"], responses=KEY_PROBLEMS)


@policy_router.post("/v1/policy/explain", response_model=PolicyAnswer, dependencies=[requires("followups:read")])
async def explain_policy(request: Request, sample: SampleResponse) -> PolicyAnswer:
    """Which rule of the running policy a response would match, and what would happen; nothing is done."""
    return answer_for(request.app.state.policy.current, sample)


def answer_for(policy: Policy, sample: SampleResponse) -> PolicyAnswer:
    explained = policy.explain(facts_of_sample(sample))
    decision = explained.decision
    return PolicyAnswer(
        rule=decision.rule,
        action=decision.action,
        priority=decision.priority if decision.action == "ticket" else None,
        template=decision.template,
        policy_version=decision.policy_version,
        first_contact_sla_s=decision.first_contact_s,
        resolution_sla_s=decision.resolution_s,
        skipped=[Skipped(rule=name, because=reasons) for name, reasons in explained.skipped],
        experiment=None
        if decision.experiment is None
        else RuleExperiment(
            experiment_id=decision.experiment.experiment_id,
            control=decision.experiment.control,
            arms=[ArmAnswer(arm=a.name, weight=a.weight, action=a.action) for a in decision.experiment.arms],
        ),
    )


def facts_of_sample(sample: SampleResponse) -> Facts:
    return Facts.of(
        sample.score,
        sample.channel,
        sample.survey_id,
        sample.attributes,
        sample.comment,
        sample.previous_score,
        sample.identity,
    )
