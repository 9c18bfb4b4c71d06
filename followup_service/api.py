"""Follow-up's API: look up what a response was routed to; list, read and change tickets."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

from followup_service import handlers, outcomes, repository
from followup_service.domain import ContactRules, IllegalTransition, Priority, TicketChange, TicketStatus
from followup_service.policy import Facts, Policy
from shared import audit
from shared.auth import KEY_PROBLEMS, requires
from shared.events import FollowUpKind
from shared.http import Problem, ProblemError, decode_cursor, encode_cursor
from shared.http import invalid_field as _invalid
from shared.service import ReadConnection
from shared.validation import PLAIN


class FollowUpAnswer(BaseModel):
    followup_id: str
    kind: FollowUpKind
    response_id: str
    respondent_id: str | None = Field(description="null once the respondent was erased")
    score: int
    created_at: datetime
    status: Literal["created", "failed", "suppressed"] = Field(
        description="created: its message is out (FollowUpCreated); failed: its template failed on this response; "
        "suppressed: held back (see reason)"
    )
    reason: str | None = Field(
        description="why it failed, or why it was suppressed: throttled, opted_out, erased, policy_none"
    )
    eligible_at: datetime | None = Field(description="throttled: when a message of this kind would be allowed")
    rule: str | None = Field(description="the policy rule that decided (null: none matched, or erased)")
    policy_version: str | None
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


# --- tickets ---

TicketId = Annotated[str, Path(pattern=r"^tk_[0-9a-f]{32}$", description="a ticket's id, `tk_` and 32 hex digits")]


class HistoryEntry(BaseModel):
    version: int
    at: datetime
    actor: str = Field(description="the name of the API key that made the change")
    status_from: str | None
    status_to: str | None
    assignee: str | None
    resolution: str | None
    note: str | None = Field(description="null once the respondent was erased")


class Ticket(BaseModel):
    ticket_id: str
    version: int = Field(description="send it back in `If-Match` to change the ticket")
    response_id: str
    respondent_id: str | None = Field(description="null once the respondent was erased")
    score: int
    comment: str | None
    status: TicketStatus
    priority: Priority
    assignee: str | None
    resolution: str | None
    channel: str | None
    survey_id: str | None
    created_at: datetime
    updated_at: datetime
    first_contact_at: datetime | None
    resolved_at: datetime | None
    first_contact_sla_s: float | None = Field(
        default=None,
        description="the time to first contact set by the ticket's policy rule, in seconds; null: "
        "its priority's (NPS_FOLLOWUP_SLA)",
    )
    resolution_sla_s: float | None = Field(default=None, description="the same for the time to resolution")


class TicketWithHistory(Ticket):
    history: list[HistoryEntry]


class TicketPage(BaseModel):
    tickets: list[Ticket]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class TicketPatch(BaseModel):
    """What to change; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    status: TicketStatus | None = None
    assignee: str | None = Field(default=None, max_length=128, description="an empty string unassigns")
    note: str | None = Field(default=None, min_length=1, max_length=5000)
    resolution: str | None = Field(default=None, min_length=1, max_length=200)


tickets_router = APIRouter(tags=["tickets"], responses=KEY_PROBLEMS)

_AGE = re.compile(r"^(\d{1,5})([mhd])$")


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: "3"` (the ETag of version 3) or `*` (any version, None). Missing: 428."""
    if value is None:
        raise ProblemError(
            428,
            "if_match_required",
            'send If-Match with the ticket\'s version (its ETag, e.g. "3"), or * to change it whatever it is',
        )
    text = value.strip()
    if text == "*":
        return None
    match = re.fullmatch(r'(?:W/)?"?(\d{1,9})"?', text)
    if match is None:
        raise _invalid("If-Match", 'expected the ticket\'s ETag, e.g. "3", or *')
    return int(match.group(1))


def etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


@tickets_router.get("/v1/tickets", response_model=TicketPage, dependencies=[requires("followups:read")])
async def list_tickets(
    conn: ReadConnection,
    status: TicketStatus | None = None,
    priority: Priority | None = None,
    channel: Annotated[str | None, Query(min_length=1, max_length=64, pattern=PLAIN)] = None,
    survey_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=PLAIN)] = None,
    older_than: Annotated[
        str | None,
        Query(pattern=r"^\d{1,5}[mhd]$", description="only tickets created at least this long ago: 30m, 4h, 7d"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> TicketPage:
    """Tickets, newest first, `limit` at a time."""
    before = None
    if older_than is not None:
        match = _AGE.match(older_than)
        assert match is not None  # the pattern above
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        before = datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    where = repository.TicketFilter(
        status=status,
        priority=priority,
        channel=channel,
        survey_id=survey_id,
        created_before=before,
        after=decode_cursor(cursor) if cursor else None,
    )
    rows = await repository.list_tickets(conn, where, limit + 1)
    page = [Ticket.model_validate(r._mapping) for r in rows[:limit]]
    more = len(rows) > limit
    return TicketPage(
        tickets=page, next_cursor=encode_cursor(page[-1].created_at, page[-1].ticket_id) if more else None
    )


@tickets_router.get(
    "/v1/tickets/{ticket_id}",
    response_model=TicketWithHistory,
    dependencies=[requires("followups:read")],
    responses={404: {"model": Problem, "description": "no such ticket"}},
)
async def get_ticket(conn: ReadConnection, ticket_id: TicketId, response: Response) -> TicketWithHistory:
    """A ticket with every change made to it; its `ETag` is its version."""
    row = await repository.get_ticket(conn, ticket_id)
    if row is None:
        raise ProblemError(404, "not_found", "no such ticket")
    history = [HistoryEntry.model_validate(h._mapping) for h in await repository.ticket_history(conn, ticket_id)]
    response.headers.update(etag(row.version))
    return TicketWithHistory.model_validate({**row._mapping, "history": history})


@tickets_router.patch(
    "/v1/tickets/{ticket_id}",
    response_model=Ticket,
    responses={
        404: {"model": Problem, "description": "no such ticket"},
        409: {"model": Problem, "description": "`illegal_transition`: the status cannot go there from where it is"},
        412: {"model": Problem, "description": "`version_mismatch`: the ticket changed since that version"},
        428: {"model": Problem, "description": "`if_match_required`: send If-Match"},
    },
)
async def patch_ticket(
    request: Request,
    ticket_id: TicketId,
    body: TicketPatch,
    response: Response,
    actor: Annotated[str, requires("tickets:write")],
    if_match: Annotated[str | None, Header(description='the version you read, as its ETag ("3"), or *')] = None,
) -> Any:
    """Change a ticket's status (open → in_progress → contacted → resolved → closed; reopen from
    resolved or closed), assignee, note or resolution. Publishes `TicketUpdated`."""
    expected = parse_if_match(if_match)
    if body.model_fields_set == set():
        raise _invalid("body", "nothing to change: send status, assignee, note or resolution")
    change = TicketChange(status=body.status, assignee=body.assignee, note=body.note, resolution=body.resolution)
    try:
        async with request.app.state.engine.begin() as conn:
            ticket = await handlers.update_ticket(
                conn, request.app.state.settings.topics, ticket_id, change, expected, actor, datetime.now(UTC)
            )
    except handlers.TicketNotFound:
        raise ProblemError(404, "not_found", "no such ticket") from None
    except handlers.StaleVersion as exc:
        raise ProblemError(
            412,
            "version_mismatch",
            f"the ticket changed: it is at version {exc.current}; read it again",
            headers=etag(exc.current),
        ) from None
    except IllegalTransition as exc:
        raise ProblemError(409, "illegal_transition", str(exc)) from None
    response.headers.update(etag(ticket.version))
    return Ticket.model_validate(ticket, from_attributes=True)


# --- the policy ---


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


class Skipped(BaseModel):
    rule: str
    because: list[str]


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
    )


def facts_of_sample(sample: SampleResponse) -> Facts:
    return Facts.of(
        sample.score, sample.channel, sample.survey_id, sample.attributes, sample.comment, sample.previous_score
    )


# --- contact rules ---

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


contact_router = APIRouter(tags=["contact rules"], responses=KEY_PROBLEMS)


async def _opt(request: Request, respondent_id: str, actor: str, out: bool) -> OptOut:
    key = request.app.state.pseudonyms.key(respondent_id)
    now = datetime.now(UTC)
    async with request.app.state.engine.begin() as conn:
        changed = await repository.set_opt_out(conn, key, now if out else None)
        if changed:
            action = "respondent.opted_out" if out else "respondent.opted_in"
            await audit.record(conn, actor, action, key[:16])  # the key's prefix: never the person's id
    return OptOut(respondent_id=respondent_id, opted_out=out, changed=changed)


@contact_router.post("/v1/respondents/{respondent_id}/opt-out", response_model=OptOut)
async def opt_out(
    request: Request, respondent_id: RespondentId, actor: Annotated[str, requires("contact:write")]
) -> OptOut:
    """The person gets no follow-up message from now on (their tickets still reach support)."""
    return await _opt(request, respondent_id, actor, out=True)


@contact_router.delete("/v1/respondents/{respondent_id}/opt-out", response_model=OptOut)
async def opt_in(
    request: Request, respondent_id: RespondentId, actor: Annotated[str, requires("contact:write")]
) -> OptOut:
    """The person may receive follow-up messages again (within the contact rules)."""
    return await _opt(request, respondent_id, actor, out=False)


@contact_router.get(
    "/v1/respondents/{respondent_id}/contact", response_model=Contact, dependencies=[requires("contact:read")]
)
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


# --- referrals and outcomes: a window of days and a segment ---

WindowDays = Annotated[str, Query(pattern=r"^[1-9][0-9]{0,3}d$", description="the last N days, e.g. 30d")]
SegmentFilter = Annotated[
    str,
    Query(pattern=r"^(all|(channel|survey_id):[A-Za-z0-9._:-]{1,128})$", description="all, channel:X or survey_id:X"),
]


def time_and_segment(window: str, segment: str) -> tuple[datetime, str | None, str | None]:
    """(since, channel, survey_id) for a validated window and segment."""
    dimension, _, value = segment.partition(":")
    since = datetime.now(UTC) - timedelta(days=int(window[:-1]))
    return since, value if dimension == "channel" else None, value if dimension == "survey_id" else None


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


referrals_router = APIRouter(tags=["referrals"], responses=KEY_PROBLEMS)


@referrals_router.post(
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


@referrals_router.get(
    "/v1/referrals/stats", response_model=ReferralStatsAnswer, dependencies=[requires("followups:read")]
)
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


# --- outcomes ---


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


def _share(s: outcomes.Share) -> ShareAnswer:
    interval = [s.low, s.high] if s.low is not None and s.high is not None else None
    return ShareAnswer(n=s.n, moved=s.moved, share=s.share, ci95=interval)


def _change(c: outcomes.Change) -> ChangeAnswer:
    interval = [c.low, c.high] if c.low is not None and c.high is not None else None
    return ChangeAnswer(n=c.n, points=c.points, ci95=interval)


outcomes_router = APIRouter(tags=["outcomes"], responses=KEY_PROBLEMS)


@outcomes_router.get("/v1/outcomes", response_model=OutcomesAnswer, dependencies=[requires("followups:read")])
async def get_outcomes(
    conn: ReadConnection,
    window: WindowDays = "180d",
    segment: SegmentFilter = "all",
) -> OutcomesAnswer:
    """People who answered again in the window, by the follow-up their previous answer got: how many
    moved up, and the NPS change of those followed up against those who were not."""
    cells = await repository.outcome_cells(conn, *time_and_segment(window, segment))
    result = outcomes.report(cells)
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
