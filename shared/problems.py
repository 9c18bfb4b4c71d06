"""Error answers, the one shape every API gives them (problem JSON with a stable `code`): the body,
the errors several APIs share, a list's page cursor (a bad one is such an error), and the handlers
that give FastAPI's own errors that shape."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.validation import FieldProblem, field_problems


class Problem(BaseModel):
    """Every error answer has this body; `code` is stable and safe to branch on."""

    code: str
    message: str
    errors: list[FieldProblem] = []
    response_id: str | None = Field(
        default=None,
        description="Only on a 503 whose outcome is unknown: the response_id to retry with, so the retry counts once.",
    )


class ProblemError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: list[FieldProblem] | None = None,
        headers: Mapping[str, str] | None = None,
        response_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problem = Problem(code=code, message=message, errors=errors or [], response_id=response_id)
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        """The one serialization of an error answer, for framework and raw routes alike."""
        return self.problem.__pydantic_serializer__.to_json(self.problem, exclude_none=True)


def problem_response(exc: ProblemError) -> Response:
    return Response(exc.body(), status_code=exc.status, headers=exc.headers, media_type="application/json")


def invalid_request(errors: list[FieldProblem]) -> ProblemError:
    return ProblemError(422, "invalid_request", "the request does not match the schema", errors)


def invalid_field(field: str, problem: str) -> ProblemError:
    """422 naming one field (a path or query parameter, or a body field) and what is wrong with it."""
    return ProblemError(
        422, "invalid_request", "the request is invalid", errors=[FieldProblem(field=field, problem=problem)]
    )


def too_large(limit: int) -> ProblemError:
    return ProblemError(413, "body_too_large", f"the request body is larger than {limit} bytes")


def rate_limited(whose: str, wait: int) -> ProblemError:
    """429: past `whose` rate (a key's, an address's, a person's), with the seconds to wait."""
    return ProblemError(
        429, "rate_limited", f"rate limit of {whose} reached; retry in {wait}s", headers={"Retry-After": str(wait)}
    )


def internal_error() -> ProblemError:
    return ProblemError(500, "internal_error", "internal error; the service logged it")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> Response:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return problem_response(invalid_request(field_problems(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:
            # FastAPI's "error parsing the body" (e.g. not UTF-8): the same contract as bad JSON.
            return problem_response(
                ProblemError(
                    422,
                    "invalid_request",
                    "the body is not valid JSON (UTF-8)",
                    [FieldProblem(field="body", problem=str(exc.detail))],
                )
            )
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem_response(
            ProblemError(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))
        )


def encode_cursor(at: datetime, key: str) -> str:
    """A list's next-page cursor: the last item's (time, id), opaque to clients."""
    raw = json.dumps([at.isoformat(), key]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(at), str(key)
    except (ValueError, TypeError, binascii.Error):
        raise invalid_field("cursor", "not a cursor this API gave out") from None
