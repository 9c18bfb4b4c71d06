"""Ingest's HTTP API: product apps post, revise and erase responses here. The three POSTs are
raw routes (ingest_service/raw.py: the hot path); revising and erasing go through `router`."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from starlette.datastructures import State

from ingest_service import metrics
from ingest_service.deps import Admin, Eraser, Handler, Writer
from ingest_service.domain import EXAMPLE, MAX_BATCH_ITEMS, InvalidResponse, ReviseResponse, SubmitResponse
from ingest_service.handlers import (
    CONFLICT_PROBLEM,
    BatchOutcomeUnknown,
    Conflict,
    Ingest,
    NotFound,
    OutcomeUnknown,
    StoreUnavailable,
)
from ingest_service.invitations import (
    INVITATION_EXAMPLE,
    MAX_INVITATIONS,
    Impression,
    ImpressionOut,
    InvitationConflict,
    Invitations,
    InvitationsIn,
    InvitationsOut,
)
from ingest_service.prompt import PromptAnswer, PromptQuery, PromptReader, PromptRules, PromptUnavailable, decide
from ingest_service.public import PublicCalls
from ingest_service.publisher import PublishFailed
from ingest_service.raw import RawRequest, RawRoute
from shared import audit
from shared.events import Identity
from shared.problems import Problem, ProblemError
from shared.service import ReadConnection
from shared.validation import PLAIN, FieldProblem

log = logging.getLogger(__name__)

RETRY = {"Retry-After": "1"}


class Accepted(BaseModel):
    response_id: str


class Revised(BaseModel):
    response_id: str
    version: int


class ErasureAccepted(BaseModel):
    erasure_id: str
    respondent_id: str


class Validated(BaseModel):
    valid: Literal[True] = True


class BatchIn(BaseModel):
    """Each item is validated on its own: valid items are accepted even when others are not."""

    responses: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class BatchItem(BaseModel):
    index: int
    status: Literal["accepted", "rejected", "conflict", "unavailable"]
    response_id: str | None = None
    errors: list[FieldProblem] = []


class BatchOut(BaseModel):
    accepted: int
    rejected: int
    conflict: int
    unavailable: int
    results: list[BatchItem]


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "missing or unknown API key",
        403: "the API key lacks the scope this call needs",
        404: "no such response",
        409: "the id was already used with a different body",
        413: "the body is too large",
        422: "invalid input; `errors` names each field",
        429: "rate limit of this API key; retry after Retry-After seconds",
        503: "the broker or database did not answer: retry after Retry-After; when the outcome is unknown, "
        "`response_id` says which id to retry with",
    }
    return {code: {"model": Problem, "description": described[code]} for code in codes}


def invalid(exc: InvalidResponse) -> ProblemError:
    return ProblemError(422, "invalid_request", "the response is invalid", list(exc.problems))


def conflict() -> ProblemError:
    return ProblemError(
        409, "response_id_conflict", CONFLICT_PROBLEM, [FieldProblem(field="response_id", problem=CONFLICT_PROBLEM)]
    )


def unavailable(exc: Exception) -> ProblemError:
    what = (
        exc.where
        if isinstance(exc, OutcomeUnknown)
        else "database"
        if isinstance(exc, StoreUnavailable | BatchOutcomeUnknown)
        else "broker"
    )
    log.warning("%s did not answer in time (%s); answering 503", what, type(exc).__name__)
    if isinstance(exc, OutcomeUnknown):
        late = (
            "the broker did not acknowledge in time" if exc.where == "broker" else "the database did not answer in time"
        )
        return ProblemError(
            503,
            f"{exc.where}_unavailable",
            f"{late}, so the response may or may not be stored: retry with response_id {exc.response_id!r}, "
            "which counts it once either way",
            headers=RETRY,
            response_id=exc.response_id,
        )
    if isinstance(exc, BatchOutcomeUnknown):
        return ProblemError(
            503,
            "database_unavailable",
            "the database did not answer in time, so the batch's items may or may not be stored: send it again as it "
            "was (an item with a response_id counts once either way)",
            headers=RETRY,
        )
    return ProblemError(
        503, f"{what}_unavailable", f"the {what} did not answer in time; nothing was stored: retry", headers=RETRY
    )


# --- the raw POSTs: each reads the caller's key and its body, calls the use case, answers ---


async def post_response(state: State, request: RawRequest) -> bytes:
    """The answer is Accepted's JSON, encoded by msgspec from a dict: 0.09 us, where building the
    model and serializing it costs 0.9."""
    key = state.gate.key(request.header_values(b"authorization"), "responses:write", public=True)
    handler: Ingest = state.ingest
    identity: Identity = "server"
    if key.publishable:
        public: PublicCalls = state.public
        public.admit_request(key, request)
        body = public.admit(key, request, request.json(SubmitResponse))
        identity = "anonymous" if key.bound.anonymous else "verified"
    else:
        body = request.json(SubmitResponse)
    try:
        item = await handler.submit(body, datetime.now(UTC), key.name, identity)
    except InvalidResponse as exc:
        metrics.OUTCOMES["rejected"].inc()
        raise invalid(exc) from exc
    except Conflict as exc:
        metrics.OUTCOMES["conflict"].inc()
        raise conflict() from exc
    except (OutcomeUnknown, StoreUnavailable) as exc:
        metrics.OUTCOMES["unavailable"].inc()
        raise unavailable(exc) from exc
    metrics.OUTCOMES["accepted"].inc()
    return _ANSWER.encode({"response_id": item.response_id})


async def validate_response(state: State, request: RawRequest) -> Validated:
    state.gate(request.header_values(b"authorization"), "responses:write")
    handler: Ingest = state.ingest
    try:
        handler.validate(request.json(SubmitResponse), datetime.now(UTC))
    except InvalidResponse as exc:
        raise invalid(exc) from exc
    return Validated()


async def post_batch(state: State, request: RawRequest) -> bytes:
    """The answer is encoded straight from the results (msgspec structs, in BatchItem's field
    order): 1,000 result models cost more than the rest of it, and building dicts for
    pydantic-core to encode cost ~0.3 us an item, where this costs ~0.06."""
    source = state.gate(request.header_values(b"authorization"), "responses:write")
    handler: Ingest = state.ingest
    body = request.json(BatchIn)
    try:
        results = await handler.submit_batch(body.responses, datetime.now(UTC), source)
    except (StoreUnavailable, BatchOutcomeUnknown) as exc:
        metrics.OUTCOMES["unavailable"].inc(len(body.responses))
        raise unavailable(exc) from exc
    counts = {status: 0 for status in ("accepted", "rejected", "conflict", "unavailable")}
    for r in results:
        counts[r.status] += 1
    for status, n in counts.items():
        metrics.OUTCOMES[status].inc(n)
    if counts["unavailable"] == len(results):
        raise unavailable(PublishFailed("no item acknowledged"))
    return _ANSWER.encode({**counts, "results": results})


async def post_invitations(state: State, request: RawRequest) -> InvitationsOut:
    source = state.gate(request.header_values(b"authorization"), "invitations:write")
    handler: Invitations = state.invitations
    body = request.json(InvitationsIn)
    try:
        return await handler.invite(body, datetime.now(UTC), source)
    except InvalidResponse as exc:
        raise ProblemError(422, "invalid_request", "the invitations are invalid", list(exc.problems)) from exc
    except (PublishFailed, StoreUnavailable) as exc:
        raise unavailable(exc) from exc


async def post_impression(state: State, request: RawRequest) -> ImpressionOut:
    """A prompt shown or dismissed: a publishable key's (the widget's), or a secret key's with
    invitations:write (an app that shows its own prompt)."""
    key = state.gate.key(request.header_values(b"authorization"), "invitations:write", public=True)
    handler: Invitations = state.invitations
    if key.publishable:
        public: PublicCalls = state.public
        public.admit_request(key, request)
        body = request.json(Impression)
        channel = public.admit_person(key, body.respondent_id, body.respondent_hash, body.survey_id, body.channel)
    else:
        body = request.json(Impression)
        channel = body.channel
    try:
        return await handler.impression(body, channel, datetime.now(UTC), key.name)
    except InvalidResponse as exc:
        raise invalid(exc) from exc
    except InvitationConflict as exc:
        problem = "already used for another person, survey or channel"
        raise ProblemError(
            409,
            "impression_id_conflict",
            f"impression_id {problem}",
            [FieldProblem(field="impression_id", problem=problem)],
        ) from exc
    except (PublishFailed, StoreUnavailable) as exc:
        raise unavailable(exc) from exc


async def get_prompt(state: State, request: RawRequest) -> PromptAnswer:
    """Whether to show this person the prompt now: a publishable key's (the widget's), with the
    person's identity proven as for a response, or a secret key's with contact:read."""
    key = state.gate.key(request.header_values(b"authorization"), "contact:read", public=True)
    asked = request.params(PromptQuery)
    rules: PromptRules = state.prompt_rules
    if key.publishable:
        public: PublicCalls = state.public
        public.admit_request(key, request)
        public.admit_person(
            key, asked.respondent_id, asked.respondent_hash, asked.survey_id, asked.channel, limit=False
        )
    # The key's sample, else the survey's, else everyone.
    share = key.bound.sample or rules.samples.get(asked.survey_id or "", 1.0)
    respondent_key = state.pseudonyms.key(asked.respondent_id)
    reader: PromptReader = state.prompt_reader
    try:
        facts = await reader.facts(asked.respondent_id, respondent_key)
    except PromptUnavailable as exc:
        raise unavailable(StoreUnavailable(str(exc))) from exc
    return decide(facts, datetime.now(UTC), rules, respondent_key, share)


def _problem_of(value: object) -> dict[str, str]:
    if isinstance(value, FieldProblem):
        return {"field": value.field, "problem": value.problem}
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_ANSWER = msgspec.json.Encoder(enc_hook=_problem_of)


ONE = {"detractor": {"value": EXAMPLE}}
RAW_ROUTES = (
    RawRoute(
        "/v1/responses",
        "post_response",
        post_response,
        SubmitResponse,
        Accepted,
        202,
        "Submit one survey response",
        examples=ONE,
        responses=problems(401, 403, 409, 413, 422, 429, 503),
        tags=["responses"],
    ),
    RawRoute(
        "/v1/responses/validate",
        "validate_response",
        validate_response,
        SubmitResponse,
        Validated,
        200,
        "Check a response without submitting it (a dry run)",
        examples=ONE,
        responses=problems(401, 403, 413, 422, 429),
        tags=["responses"],
    ),
    RawRoute(
        "/v1/responses/batch",
        "post_batch",
        post_batch,
        BatchIn,
        BatchOut,
        200,
        f"Submit up to {MAX_BATCH_ITEMS} responses (backfills)",
        description="Every item gets its own result. `accepted` means the broker has it; retry "
        "`unavailable` items with the `response_id` given back; fix `rejected` and `conflict` ones.",
        examples={
            "two": {"value": {"responses": [EXAMPLE, {**EXAMPLE, "response_id": "5d0c6a3e-web-43", "score": 10}]}}
        },
        responses=problems(401, 403, 413, 422, 429, 503),
        tags=["responses"],
    ),
    RawRoute(
        "/v1/invitations",
        "post_invitations",
        post_invitations,
        InvitationsIn,
        InvitationsOut,
        202,
        f"Record who was asked: up to {MAX_INVITATIONS} invitations (for response rates)",
        description="Idempotent on `invitation_id`: the same invitation again counts once, one reused with another "
        "body is listed in `conflicts` and not recorded. A response names its invitation with `invitation_id`, or "
        "answers the person's latest invitation to its survey within the match window.",
        examples={"one": {"value": {"invitations": [INVITATION_EXAMPLE]}}},
        responses=problems(401, 403, 413, 422, 429, 503),
        tags=["invitations"],
    ),
    RawRoute(
        "/v1/prompt",
        "get_prompt",
        get_prompt,
        PromptQuery,
        PromptAnswer,
        200,
        "Should this person see the NPS prompt now? (publishable keys; secret keys with contact:read)",
        description="No when they opted out of follow-up, were erased, answered within NPS_INGEST_SURVEY_MIN_DAYS, "
        "were invited or shown the prompt within NPS_INGEST_PROMPT_GAP_DAYS, or are not in the key's (or survey's) "
        "sample this period; `reason` says which, `next_at` from when it may be yes.",
        responses=problems(401, 403, 413, 422, 429, 503),
        tags=["invitations"],
        method="GET",
    ),
    RawRoute(
        "/v1/impressions",
        "post_impression",
        post_impression,
        Impression,
        ImpressionOut,
        202,
        "The prompt was shown to a person, or they dismissed it (publishable keys)",
        description="One invitation of the prompt's channel per `impression_id`: its `dismissed` after its `shown` "
        "is the same invitation. With a publishable key, `respondent_hash` as on POST /v1/responses.",
        responses=problems(401, 403, 409, 413, 422, 429, 503),
        tags=["invitations"],
    ),
)

# --- revising and erasing: framework routes ---

router = APIRouter()
PathId = Annotated[str, Path(min_length=1, max_length=128, pattern=PLAIN)]


@router.put(
    "/v1/responses/{response_id}",
    status_code=202,
    response_model=Revised,
    tags=["responses"],
    summary="Revise a response: its score, comment and attributes are replaced",
    responses=problems(401, 403, 404, 413, 422, 429, 503),
)
async def put_response(response_id: PathId, body: ReviseResponse, handler: Handler, source: Writer) -> Revised:
    try:
        event = await handler.revise(response_id, body, datetime.now(UTC), source)
    except InvalidResponse as exc:
        raise invalid(exc) from exc
    except NotFound as exc:
        raise ProblemError(404, "not_found", "no response with that response_id") from exc
    except (PublishFailed, StoreUnavailable) as exc:
        raise unavailable(exc) from exc
    return Revised(response_id=response_id, version=event.version)


@router.delete(
    "/v1/respondents/{respondent_id}",
    status_code=202,
    response_model=ErasureAccepted,
    tags=["respondents"],
    summary="Erase a respondent's personal data everywhere",
    responses=problems(401, 403, 422, 429, 503),
)
async def erase_respondent(respondent_id: PathId, handler: Handler, source: Eraser) -> ErasureAccepted:
    try:
        event = await handler.erase(respondent_id, datetime.now(UTC), source)
    except (PublishFailed, StoreUnavailable) as exc:
        raise unavailable(exc) from exc
    log.info("erasure %s requested by key %s", event.erasure_id, source, extra={"erasure_id": event.erasure_id})
    return ErasureAccepted(erasure_id=event.erasure_id, respondent_id=respondent_id)


# --- the audit log (admin) ---


class AuditAnswer(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


class AuditLog(BaseModel):
    entries: list[AuditAnswer]


@router.get(
    "/v1/audit",
    response_model=AuditLog,
    tags=["audit"],
    summary="The audit log, newest first: keys created and revoked, erasures requested",
    responses=problems(401, 403, 422, 429, 503),
)
async def get_audit(
    _: Admin,
    conn: ReadConnection,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: Annotated[str | None, Query(min_length=1, max_length=64, pattern=PLAIN)] = None,
) -> AuditLog:
    found = await audit.entries(conn, limit, action)
    return AuditLog(entries=[AuditAnswer(**asdict(entry)) for entry in found])
