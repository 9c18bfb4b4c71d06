"""The HTTP edges every service shares (shared/http.py): bodies that stall or overflow, paths that
are not UTF-8 or hold control characters, and errors nobody expected."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from starlette.types import Message

from followup_service.bootstrap import create_app
from followup_service.settings import FollowUpSettings
from services.embedded import free_port
from shared.auth import Gate, Key
from shared.db import make_engine
from shared.http import read_body
from shared.problems import ProblemError
from tests.helpers import TEST_PSEUDONYM_SECRET
from tests.unit.test_auth import FakeKeys

SECRET = SecretStr(TEST_PSEUDONYM_SECRET)

KEY = {"Authorization": "Bearer nps_reader"}


class NoDatabase:
    def connect(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


def follow_up_app() -> httpx.AsyncClient:
    app = create_app(FollowUpSettings(pseudonym_secret=SECRET))
    app.state.gate = Gate(FakeKeys({"nps_reader": Key("reader", frozenset({"followups:read"}))}))
    # The routes' dependencies run even when a parameter is invalid; no query is made then.
    app.state.engine = NoDatabase()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("SELECT ... parameters: ('jane@example.com', '555-0199')")

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://followup")


async def test_a_stalled_body_gets_408_and_a_large_one_413() -> None:
    async def stalls() -> Message:
        await asyncio.sleep(10)
        return {"type": "http.request", "body": b"", "more_body": False}

    with pytest.raises(ProblemError) as info:
        await read_body({}, stalls, limit=100, timeout_s=0.05)
    assert (info.value.status, info.value.problem.code) == (408, "body_timeout")

    chunks = iter([b"x" * 60, b"x" * 60])

    async def streams() -> Message:
        return {"type": "http.request", "body": next(chunks), "more_body": True}

    with pytest.raises(ProblemError) as info:
        await read_body({}, streams, limit=100, timeout_s=1)
    assert info.value.status == 413
    with pytest.raises(ProblemError):
        await read_body({b"content-length": b"101"}, streams, limit=100, timeout_s=1)

    async def whole() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    assert await read_body({}, whole, limit=100, timeout_s=1) == b"{}"


@pytest.mark.parametrize("path", ["/v1/followups/a%00b", "/v1/followups/%ED%A0%80", "/v1/followups/a%0Ab"])
async def test_path_parameters_that_are_not_plain_utf8_get_422(path: str) -> None:
    async with follow_up_app() as client:
        reply = await client.get(path, headers=KEY)
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "invalid_request"


async def test_an_unexpected_error_is_a_problem_500_logged_without_request_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with follow_up_app() as client:
        reply = await client.get("/boom")
    assert reply.status_code == 500
    assert reply.json()["code"] == "internal_error"
    above_debug = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert any("RuntimeError" in r.getMessage() for r in above_debug)
    for record in above_debug:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        assert "555-0199" not in text and "jane@example.com" not in text
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)  # the detail is at DEBUG


@contextlib.asynccontextmanager
async def followup_without_database() -> AsyncIterator[httpx.AsyncClient]:
    """Follow-up's app, in process, with a reader key and its database away (nothing listens there)."""
    app = create_app(FollowUpSettings(pseudonym_secret=SECRET))
    app.state.gate = Gate(FakeKeys({"nps_reader": Key("reader", frozenset({"followups:read"}))}))
    engine = make_engine(f"postgresql://nps@127.0.0.1:{free_port()}/nps")
    app.state.engine = engine
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://followup") as client:
            yield client
    finally:
        await engine.dispose()


async def test_a_database_that_is_away_is_a_503_with_retry_after_not_a_500() -> None:
    async with followup_without_database() as client:
        reply = await client.get("/v1/followups/r-1", headers=KEY)
    assert reply.status_code == 503, reply.text
    assert reply.json()["code"] == "database_unavailable"
    assert reply.headers["retry-after"] == "1"


async def test_metrics_can_be_behind_a_token() -> None:
    app = create_app(FollowUpSettings(metrics_token=SecretStr("s3cret-scrape"), pseudonym_secret=SECRET))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://followup") as client:
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
        health = await client.get("/healthz")
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert anonymous.json()["code"] == "invalid_metrics_token"
    assert right.status_code == 200 and "nps_http_requests_total" in right.text
    assert health.status_code == 200  # /healthz and /readyz stay open to probes
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(FollowUpSettings(pseudonym_secret=SECRET))),
        base_url="http://followup",
    ) as client:
        assert (await client.get("/metrics")).status_code == 200  # no token configured: open


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/outcomes?window=forever", "window"),  # a query parameter
        ("/v1/outcomes?segment=plan:;drop", "segment"),
        ("/v1/tickets?limit=0", "limit"),
    ],
)
async def test_a_bad_parameter_is_a_422_even_while_the_database_is_away(path: str, field: str) -> None:
    """The caller's mistake is named whatever the database's state: the route's parameters are
    checked before a connection is asked for (it was a 503 during an outage)."""
    async with followup_without_database() as client:
        bad = await client.get(path, headers=KEY)
        good = await client.get(path.split("?")[0], headers=KEY)
    assert bad.status_code == 422, bad.text
    assert field in bad.text
    assert good.status_code == 503, good.text  # the same route with good parameters still needs the database
