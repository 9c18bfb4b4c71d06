"""HTTP plumbing every service shares: the request middleware (metrics, limits, deadlines), health
routes, the app factory and serving. Error answers are shared/problems.py's."""

from __future__ import annotations

import asyncio
import functools
import gc
import hmac
import logging
import os
import signal
import socket
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared import logs, metrics
from shared.db import database_unavailable, describe_failure
from shared.deadline import Deadline, DeadlineExceeded
from shared.logs import REQUEST_ID_BYTES, accept_request_id
from shared.problems import (
    ProblemError,
    install_error_handlers,
    internal_error,
    invalid_request,
    problem_response,
    too_large,
)
from shared.validation import FieldProblem

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1024)  # bounded anyway: routes are templates, statuses are classes
def _request_series(service: str, method: str, route: str, status: str) -> tuple[Counter, Histogram]:
    return metrics.HTTP_REQUESTS.labels(service, method, route, status), metrics.HTTP_SECONDS.labels(service, route)


def record_request(service: str, method: str, route: str, status: int, seconds: float) -> None:
    """Count and time one answered request by route template (never the raw path) and status class."""
    requests, duration = _request_series(service, method, route, f"{status // 100}xx")
    requests.inc()
    duration.observe(seconds)


def log_failure(method: str, route: str, exc: BaseException) -> None:
    """An unexpected error, logged without request data above debug: exception messages can carry
    SQL parameters and bodies (personal data), so ERROR says where and what kind, DEBUG the rest."""
    log.error("%s %s failed: %s (traceback at DEBUG)", method, route, describe_failure(exc))
    log.debug("%s %s failed", method, route, exc_info=exc)


# Answered without the request deadline: they bound their own waits (the readiness probe's own
# deadline), and /readyz must answer its JSON, not the 503 a deadline gives.
UNBOUNDED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestMiddleware:
    """Every request the framework answers (raw routes do the same themselves): a path that is not
    UTF-8 gets 422 (decoded, it would silently name another resource); a request is answered
    within `db_timeout_s` of the service's time (the time the client takes to send its body is not
    counted; `shared.deadline`), else 503 with Retry-After; a database that is away gets the same
    503; an unexpected error becomes the problem body, 500, logged by log_failure; and the request
    is counted and timed by route."""

    def __init__(self, app: ASGIApp, service: str, db_timeout_s: float | None = None) -> None:
        self.app = app
        self.service = service
        self.db_timeout_s = db_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        answered = False
        request_id = accept_request_id(_header(scope, REQUEST_ID_BYTES))
        logs.set_request_id(request_id)
        limit = (
            Deadline(self.db_timeout_s, f"{scope['method']} request")
            if self.db_timeout_s is not None and scope["path"] not in UNBOUNDED_PATHS
            else None
        )

        abandoned = False  # answered 503 by this middleware while the handler still unwinds

        async def send_wrapper(message: Message) -> None:
            nonlocal status, answered
            if abandoned:
                return  # the client already has its 503
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                if limit is not None:
                    limit.disarm()  # the answer is decided; a slow reader is not the database
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_BYTES, request_id.encode())]
            await send(message)

        body_pending = scope["method"] not in ("GET", "HEAD", "OPTIONS")

        async def receive_unclocked() -> Message:
            """The client's body does not count against the deadline while it arrives; once it has
            (or for a method without one), receive() is a wait for the client to go away, which
            some layers start beside the handler: that must not stop the clock."""
            nonlocal body_pending
            assert limit is not None
            if not body_pending:
                return await receive()
            remaining = limit.pause()
            try:
                message = await receive()
            finally:
                limit.resume(remaining)
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_pending = False
            return message

        try:
            if "\ufffd" in scope["path"] and not utf8_path(scope):
                bad_path = FieldProblem(field="path", problem="the path is not valid UTF-8 once percent-decoded")
                await problem_response(invalid_request([bad_path]))(scope, receive, send_wrapper)
            elif limit is None:
                await self.app(scope, receive, send_wrapper)
            else:
                if await self._within(limit, scope, receive_unclocked, send_wrapper, lambda: answered):
                    abandoned = True  # from here on the handler's sends are dropped
                    log.warning(
                        "%s %s: no answer %g s after its deadline; answering 503 while it unwinds",
                        scope["method"],
                        route_template(scope),
                        ANSWER_GRACE_S,
                    )
                    status = 503
                    late = problem_response(database_unavailable_problem(DeadlineExceeded(limit.what, limit.seconds)))
                    late.headers[REQUEST_ID_BYTES.decode()] = request_id
                    await late(scope, receive, send)
        except Exception as exc:
            if database_unavailable(exc):  # not a bug: the database is away (it also fails /readyz)
                log.warning(
                    "%s %s: the database did not answer (%s); answering 503",
                    scope["method"],
                    route_template(scope),
                    describe_failure(exc),
                )
                problem = database_unavailable_problem(exc)
            else:
                log_failure(scope["method"], route_template(scope), exc)
                problem = internal_error()
            if not answered:
                await problem_response(problem)(scope, receive, send_wrapper)
        finally:
            record_request(self.service, scope["method"], route_template(scope), status, time.perf_counter() - started)

    async def _within(
        self, limit: Deadline, scope: Scope, receive: Receive, send: Send, answered: Callable[[], bool]
    ) -> bool:
        """Run the app under `limit` in a task of its own; True when it has not finished
        ANSWER_GRACE_S after the deadline expired and has not started its answer (the caller then
        answers, and the task finishes in the background, its output dropped)."""
        loop = asyncio.get_running_loop()
        gave_up: asyncio.Future[None] = loop.create_future()

        def give_up() -> None:
            if not gave_up.done():
                gave_up.set_result(None)

        limit.on_expire = lambda: loop.call_later(ANSWER_GRACE_S, give_up)

        async def run() -> None:
            async with limit:
                await self.app(scope, receive, send)

        work = asyncio.ensure_future(run())
        try:
            await asyncio.wait({work, gave_up}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and answered():
                await asyncio.wait({work})  # its answer has begun: it finishes it
        except asyncio.CancelledError:  # the server stops this request: the handler with it
            work.cancel()
            raise
        if work.done():
            give_up()
            work.result()  # its exception is the request's
            return False
        work.add_done_callback(_drop_outcome)
        return True


# How long after its deadline a request's handler may take to unwind (the cancellation reaching it,
# its clean-up) before the middleware answers 503 itself: an await that does not give way to the
# cancellation must not hold the answer.
ANSWER_GRACE_S = 0.5


def database_unavailable_problem(exc: BaseException) -> ProblemError:
    """The 503 for a database that refused, failed or (past the deadline) did not answer."""
    if isinstance(exc, DeadlineExceeded):
        message = f"the database did not answer within {exc.seconds:g}s; retry"
    else:
        message = "the database did not answer; retry"
    return ProblemError(503, "database_unavailable", message, headers={"Retry-After": "1"})


def _drop_outcome(task: asyncio.Task[Any]) -> None:
    """An abandoned handler's outcome (its client was answered 503): retrieved, logged at debug."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("an abandoned request ended with %s", describe_failure(task.exception()))  # type: ignore[arg-type]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def utf8_path(scope: Scope) -> bool:
    """Whether the raw path percent-decodes to valid UTF-8 (the server replaced what did not)."""
    try:
        urllib.parse.unquote_to_bytes(scope.get("raw_path") or b"").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class BodyDeadlines:
    """One watchdog per event loop for every request body being read: a read still unfinished at
    its deadline is cancelled (and answered 408). A timer per request (asyncio.timeout) cost the hot
    POSTs ~4 us each (make bench: validate-only fell from ~15,000 to ~11,000 req/s); an entry in a
    dict costs a tenth. The deadline is kept to within the watchdog's half-second tick."""

    TICK_S = 0.5
    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BodyDeadlines] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self.reading: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    @classmethod
    def of_this_loop(cls) -> BodyDeadlines:
        loop = asyncio.get_running_loop()
        found = cls._per_loop.get(loop)
        if found is None:
            found = cls._per_loop[loop] = cls()
        return found

    def enter(self, timeout_s: float) -> asyncio.Task[Any]:
        task = asyncio.current_task()
        assert task is not None
        self.reading[task] = time.monotonic() + timeout_s
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch(), name="body-deadlines")
        return task

    def leave(self, task: asyncio.Task[Any]) -> None:
        self.reading.pop(task, None)

    def timed_out(self, task: asyncio.Task[Any]) -> bool:
        """Whether this task's cancellation is the watchdog's (then it is undone: the caller answers)."""
        if task not in self.expired:
            return False
        self.expired.discard(task)
        task.uncancel()
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.TICK_S)
            now = time.monotonic()
            for task, deadline in list(self.reading.items()):
                if deadline <= now:
                    del self.reading[task]
                    self.expired.add(task)
                    task.cancel()


async def read_body(headers: Mapping[bytes, bytes], receive: Receive, limit: int, timeout_s: float) -> bytes:
    """The whole request body, or ProblemError 413 as soon as it is known to exceed `limit` (from
    Content-Length when declared, else while a chunked body streams in), or 408 when it has not
    all arrived within `timeout_s`: a client that stalls mid-body does not hold a request open."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    deadlines = BodyDeadlines.of_this_loop()
    task = deadlines.enter(timeout_s)
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if not deadlines.timed_out(task):
            raise
        raise ProblemError(
            408,
            "body_timeout",
            f"the request body did not arrive within {timeout_s:g}s",
            headers={"Connection": "close"},
        ) from None
    finally:
        deadlines.leave(task)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BodyLimitMiddleware:
    """413 for bodies over `limit`, before anything parses them (read_body); the body read is
    replayed to the route."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(dict(scope["headers"]), receive, self.limit, self.timeout_s)
        except ProblemError as exc:
            await problem_response(exc)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def route_template(scope: Scope) -> str:
    """The template of the route that answered (`/v1/followups/{response_id}`), never the raw path.
    FastAPI's router leaves the route it chose in the scope, however deep the included routers
    nest (FastAPI 0.165 wraps each included router, so scanning the app's own routes found none
    of theirs: every /v1 and health route was counted as `unmatched`). Starlette's own routes
    (/docs, /openapi.json) are found by matching."""
    chosen = scope.get("route")
    if chosen is not None and getattr(chosen, "path", None):
        return str(chosen.path)
    router = getattr(scope.get("app"), "router", None)
    for route in getattr(router, "routes", []):
        path = getattr(route, "path", None)
        if path and route.matches(scope)[0] is Match.FULL:
            return str(path)
    return "unmatched"


ReadinessCheck = Callable[[], Awaitable[bool]]


def exposition() -> bytes:
    """This process's metrics; with several processes on one port (PROMETHEUS_MULTIPROC_DIR set by
    shared/workers.py), every process's, summed, so any of them answers the service's totals."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


def health_router(checks: Callable[[], Mapping[str, ReadinessCheck]], metrics_token: str | None = None) -> APIRouter:
    """/healthz: the process answers. /readyz: every dependency answers (503 otherwise). /metrics:
    Prometheus text, behind `Authorization: Bearer <metrics_token>` when one is configured (for a
    service port that is public; Prometheus sends it with `authorization: credentials`)."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        named = dict(checks())
        results = await asyncio.gather(*(check() for check in named.values()))
        status = {name: ("ok" if ok else "failing") for name, ok in zip(named, results, strict=True)}
        ready = all(results)
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": status}, status_code=200 if ready else 503
        )

    expected = f"Bearer {metrics_token}".encode() if metrics_token else None

    @router.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise ProblemError(
                    401,
                    "invalid_metrics_token",
                    "send 'Authorization: Bearer <NPS_METRICS_TOKEN>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


A = TypeVar("A", bound=FastAPI)


def create_base_app(
    service: str, title: str, lifespan: Any, version: str = "1", db_timeout_s: float | None = None
) -> FastAPI:
    return base_app(FastAPI, service, title, lifespan, version, db_timeout_s)


def base_app(
    app_class: type[A], service: str, title: str, lifespan: Any, version: str = "1", db_timeout_s: float | None = None
) -> A:
    """A service's app: the lifespan (then a frozen heap), the error bodies, the request metrics
    and deadline (`db_timeout_s`: the service's NPS_<SERVICE>_DB_TIMEOUT_S)."""

    @asynccontextmanager
    async def frozen_after_start(app: FastAPI) -> AsyncIterator[Any]:
        declare_server_errors(service, app)
        async with lifespan(app) as state:
            # What start-up built (modules, the app, pools, clients) lives as long as the process.
            # Freezing it keeps it out of the collector's full passes, which otherwise walk that
            # whole heap in the middle of requests: measured by `make bench`, p99 of single POSTs at 4,400/s fell from 64 ms to 21 ms.
            gc.freeze()
            yield state

    app = app_class(title=title, version=version, lifespan=frozen_after_start)
    install_error_handlers(app)
    app.add_middleware(RequestMiddleware, service=service, db_timeout_s=db_timeout_s)
    return app


def declare_server_errors(service: str, app: FastAPI) -> None:
    """Every documented route's 5xx series, at 0 from the start: Prometheus sees a counter's first
    increase only against an earlier sample, so a series born at 1 would never make rate() or
    increase() (NpsHttpServerErrors) move; and the rule's query has data before anything failed."""
    for path, operations in app.openapi().get("paths", {}).items():
        for method in operations:
            _request_series(service, method.upper(), path, "5xx")


def report_worker_failure(app: FastAPI, task: asyncio.Task[Any]) -> None:
    """A background worker (the consumer loop) that dies takes the process down with it, so a
    supervisor restarts it, instead of a process that answers HTTP but consumes nothing."""
    if task.cancelled() or task.exception() is None:
        return
    log.error("worker failed; shutting down", exc_info=task.exception())
    app.state.worker_failed = True
    server = getattr(app.state, "server", None)
    if server is not None:
        server.should_exit = True


def head_deadline_protocol(timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol with a deadline on the request head: a connection whose request line
    and headers have not all arrived within `timeout_s` of its first byte (or of being opened) is
    closed. uvicorn bounds the wait between requests (keep-alive) and our BodyDeadlines the body,
    but nothing bounds the head, so a slowloris client (a header byte now and then) holds a
    connection for ever; a few thousand of them would take every file descriptor."""

    class HeadDeadline(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(timeout_s, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            metrics.HTTP_HEADS_TIMED_OUT.inc()
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeadDeadline


TASKS_LOGGED_AT_MOST = 200


def awaits(task: asyncio.Task[Any]) -> str:
    """Where a task waits: its coroutine and each one it awaits, innermost last ("a (file:line) >
    b (file:line)"); `Task.get_stack` gives only the outermost frame of a suspended coroutine."""
    chain = []
    step: Any = task.get_coro()
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "gi_frame", None)
        if frame is None:
            break
        chain.append(f"{frame.f_code.co_qualname} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})")
        step = getattr(step, "cr_await", None) or getattr(step, "gi_yieldfrom", None)
    return " > ".join(chain) or "(running or done)"


def log_tasks(*_: object) -> None:
    """SIGUSR2: every asyncio task of this process and where it waits, in one warning. For a service
    that stopped making progress without saying why (docs/operations.md); names and lines, no values."""
    try:
        loop = asyncio.get_running_loop()  # Python calls the handler in the main thread, the loop's
    except RuntimeError:
        return  # before the loop starts or after it ends: no task to show (and none made)
    tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
    lines = [f"SIGUSR2: {len(tasks)} asyncio tasks and where each waits"]
    lines += [f"{task.get_name()}: {awaits(task)}" for task in tasks[:TASKS_LOGGED_AT_MOST]]
    log.warning("\n".join(lines))


def serve(
    app: FastAPI,
    host: str,
    port: int,
    head_timeout_s: float = 10.0,
    sock: socket.socket | None = None,
    trusted_proxies: Sequence[str] = (),
) -> int:
    """Run one service in this process (on `sock`, a listening socket a parent handed it, when
    several processes share the port); returns the exit code. X-Forwarded-For is believed only
    from `trusted_proxies` (uvicorn's own default trusts loopback's)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None,
        http=head_deadline_protocol(head_timeout_s),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    app.state.server = server
    app.state.worker_failed = False
    # uvicorn handles SIGINT/SIGTERM while serving (graceful: requests, then lifespan shutdown,
    # where the consumer loop commits its batch), then re-raises the signal once done. Catch that
    # re-raise so a requested stop exits 0 instead of dying with a traceback.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    signal.signal(signal.SIGUSR2, log_tasks)
    server.run(sockets=[sock] if sock is not None else None)
    if app.state.worker_failed:
        return 1
    return 0 if server.started else 1
