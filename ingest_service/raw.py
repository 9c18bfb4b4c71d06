"""Raw ASGI routes: ingest's three POSTs, answered before Starlette's middleware stack, routing
and FastAPI's dependency solver see the request. Those cost ~200 us a request on a 2 GHz core,
more than the work itself (make bench: a bare FastAPI endpoint validating one body answers
2,620 req/s on one core, a raw route ~16,000; docs/benchmarks.md).

Each route is declared once, as a RawRoute: it is served only here, and FastAPI documents it
from the same pydantic models (`document`), so /docs and /openapi.json describe it exactly.
The body limit, the request metrics and the error body are shared/http.py's, as for every route."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import Body, FastAPI, Query, params
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from shared import logs
from shared.http import log_failure, read_body, record_request
from shared.logs import REQUEST_ID_BYTES, accept_request_id
from shared.problems import ProblemError, internal_error, invalid_request
from shared.validation import FieldProblem, field_problems

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
JSON_HEADER = (b"content-type", b"application/json")


class RawRequest:
    """What a raw route's handler sees: the headers (lower-cased names) and the whole body."""

    __slots__ = ("body", "client", "headers", "pairs", "query", "reply_headers")

    def __init__(
        self,
        pairs: list[tuple[bytes, bytes]],
        headers: dict[bytes, bytes],
        body: bytes,
        client: str | None = None,
        query: bytes = b"",
    ) -> None:
        self.pairs = pairs  # as sent, repeated names included
        self.headers = headers
        self.body = body
        self.query = query  # the raw query string (a GET's parameters)
        # The client's address: the peer's, or X-Forwarded-For's from a proxy in NPS_TRUSTED_PROXIES.
        self.client = client
        self.reply_headers: list[tuple[bytes, bytes]] = []  # the handler's own, on its answer or its error

    def header_values(self, name: bytes) -> list[str]:
        """Every value of a header the client sent (a repeated header is more than one)."""
        return [value.decode("latin-1") for key, value in self.pairs if key == name]

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    def json(self, model: type[M]) -> M:
        """Parse and validate the JSON body in one pass (pydantic's own parser); errors come back
        in the shape of FastAPI's request validation errors."""
        content_type = self.header(b"content-type")
        if content_type is not None:
            kind = content_type.split(";", 1)[0].strip().lower()
            if not (kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))):
                problem = FieldProblem(field="body", problem="send JSON with 'Content-Type: application/json'")
                raise invalid_request([problem])
        try:
            return model.model_validate_json(self.body)
        except ValidationError as exc:
            raise invalid_request(field_problems(exc.errors())) from exc

    def params(self, model: type[M]) -> M:
        """The query parameters, each given at most once, validated by `model`: errors name the
        parameter (422 `invalid_query`), as the framework routes' do."""
        try:
            pairs = parse_qsl(
                self.query.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=32
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProblemError(422, "invalid_query", "the query string is not UTF-8 key=value pairs") from exc
        given: dict[str, str] = {}
        for name, value in pairs:
            if name in given:
                raise invalid_query(name, "given more than once")
            given[name] = value
        try:
            return model.model_validate(given)
        except ValidationError as exc:
            problems = field_problems(exc.errors())
            raise ProblemError(422, "invalid_query", f"invalid {problems[0].field}", list(problems)) from exc


def invalid_query(field: str, problem: str) -> ProblemError:
    return ProblemError(
        422, "invalid_query", f"invalid {field}: {problem}", [FieldProblem(field=field, problem=problem)]
    )


# What a browser may send and read on the public operations (publishable keys: ingest_service/public.py).
ALLOW_HEADERS = b"authorization, content-type, x-request-id"
EXPOSE_HEADERS = b"x-request-id, retry-after"
PREFLIGHT_MAX_AGE_S = 600


def cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    """What a browser needs to read the answer to a request from `origin`: that origin echoed
    (never `*`), no credentials, and `Vary: Origin` so caches keep answers apart."""
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", EXPOSE_HEADERS),
        (b"vary", b"Origin"),
    ]


def preflight_cors(origin: str, methods: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", methods.encode()),
        (b"access-control-allow-headers", ALLOW_HEADERS),
        (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode()),
        (b"vary", b"Origin"),
    ]


# A handler answers a model, or JSON it serialized itself (a large answer built without models).
RawHandler = Callable[[State, RawRequest], Awaitable[BaseModel | bytes]]


@dataclass(frozen=True)
class RawRoute:
    """One POST served raw: what it does (`handle`), and what its document says."""

    path: str
    name: str  # the operation's name in the OpenAPI document
    handle: RawHandler
    body: type[BaseModel]
    response: type[BaseModel]
    status: int
    summary: str
    description: str | None = None
    examples: Mapping[str, Any] = field(default_factory=dict)
    responses: Mapping[int | str, Any] = field(default_factory=dict)
    tags: Sequence[str] = ()
    method: str = "POST"

    def documented(self, dependencies: Sequence[params.Depends]) -> APIRoute:
        """A FastAPI route that is never mounted, only described: a body of `self.body`, an answer
        of `self.response`, behind `dependencies` (the API-key scheme)."""

        async def endpoint(**_: Any) -> None:  # never called: the request is answered by RawRoutes
            raise NotImplementedError

        if self.method == "GET":  # the model's fields are the query parameters
            parameters = [
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[spec.annotation, Query(description=spec.description)],
                    default=inspect.Parameter.empty if spec.is_required() else spec.default,
                )
                for name, spec in self.body.model_fields.items()
            ]
        else:
            parameters = [
                inspect.Parameter(
                    "body",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[self.body, Body(openapi_examples=dict(self.examples) or None)],
                )
            ]
        endpoint.__signature__ = inspect.Signature(parameters, return_annotation=self.response)  # type: ignore[attr-defined]
        return APIRoute(
            self.path,
            endpoint,
            methods=[self.method],
            name=self.name,
            status_code=self.status,
            response_model=self.response,
            summary=self.summary,
            description=self.description or "",
            responses=dict(self.responses),
            tags=list(self.tags),
            dependencies=list(dependencies),
        )


class RawRoutes:
    """Answers its routes: body (with its limit), handler, the uniform error body, request metrics."""

    def __init__(
        self, service: str, routes: Sequence[RawRoute], limits: Mapping[str, int], body_timeout_s: float
    ) -> None:
        self.service = service
        self.body_timeout_s = body_timeout_s
        self.routes = {(route.method, route.path): (route, limits[route.path]) for route in routes}

    async def answer(
        self, route: RawRoute, limit: int, state: State, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.perf_counter()
        headers: dict[bytes, bytes] = dict(scope["headers"])
        request_id = accept_request_id(headers.get(REQUEST_ID_BYTES))
        logs.set_request_id(request_id)
        extra: Mapping[str, str] = {}
        request: RawRequest | None = None
        try:
            body = await read_body(headers, receive, limit, self.body_timeout_s)
            peer = scope.get("client")
            request = RawRequest(scope["headers"], headers, body, peer[0] if peer else None, scope["query_string"])
            answer = await route.handle(state, request)
            status = route.status
            payload = answer if isinstance(answer, bytes) else answer.__pydantic_serializer__.to_json(answer)
        except ProblemError as exc:
            status, payload, extra = exc.status, exc.body(), exc.headers
        except Exception as exc:
            log_failure(route.method, route.path, exc)
            status, payload = 500, internal_error().body()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    JSON_HEADER,
                    (b"content-length", str(len(payload)).encode()),
                    (REQUEST_ID_BYTES, request_id.encode()),
                    *((k.lower().encode(), v.encode()) for k, v in extra.items()),
                    *(request.reply_headers if request is not None else ()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        record_request(self.service, route.method, route.path, status, time.perf_counter() - started)


class RawFirst(FastAPI):
    """FastAPI, with the raw routes answered before Starlette sees the request: its outer layers
    (dispatch, ServerErrorMiddleware) alone cost ~6 us a request (18.6 vs 12.7 us for a validated
    POST, measured in-process), a tenth of what the whole request costs."""

    raw: RawRoutes | None = None
    # A browser's preflight of a public operation (path -> its methods): answered here, for the
    # origins `preflight_origins` gives (no key comes with a preflight).
    preflight: Mapping[str, str] = {}
    preflight_origins: Callable[[], frozenset[str]] = frozenset

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.raw is not None and scope["type"] == "http":
            found = self.raw.routes.get((scope["method"], scope["path"]))
            if found is not None:
                await self.raw.answer(*found, self.state, scope, receive, send)
                return
            if scope["method"] == "OPTIONS" and scope["path"] in self.preflight:
                await self._preflight(scope, send)
                return
        await super().__call__(scope, receive, send)

    async def _preflight(self, scope: Scope, send: Send) -> None:
        """204 with the CORS headers for an origin some active publishable key lists; otherwise 403
        `origin_not_allowed` with none, which the browser takes as a refusal. Each real request is
        then checked against its own key's origins."""
        origin = dict(scope["headers"]).get(b"origin", b"").decode("latin-1")
        if origin and origin.lower() in self.preflight_origins():
            status, payload = 204, b""
            headers = [*preflight_cors(origin, self.preflight[scope["path"]])]
        else:
            problem = ProblemError(403, "origin_not_allowed", "no publishable key is for pages of this origin")
            status, payload, headers = 403, problem.body(), [JSON_HEADER]
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        record_request("ingest", "OPTIONS", scope["path"], status, 0.0)


def serve_raw(
    app: RawFirst,
    service: str,
    routes: Sequence[RawRoute],
    limits: Mapping[str, int],
    body_timeout_s: float,
    dependencies: Sequence[params.Depends] = (),
) -> None:
    """Serve `routes` raw in front of `app`, and add them to its OpenAPI document."""
    app.raw = RawRoutes(service, routes, limits, body_timeout_s)
    documented = [route.documented(dependencies) for route in routes]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=[*app.routes, *documented],
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
