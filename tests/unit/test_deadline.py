"""shared/deadline.py's rules, on the event loop alone: a block past its deadline is cancelled after
the connections it holds are closed, and raises DeadlineExceeded; the clock can be paused; deadlines
nest. (What it does to a real PostgreSQL that hangs: tests/integration/test_hung_database.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from shared import deadline
from shared.db import database_unavailable
from shared.deadline import Deadline, DeadlineExceeded
from shared.http import ANSWER_GRACE_S, RequestMiddleware


class Held:
    """Stands for an asyncpg connection: all a deadline does with one is terminate it."""

    def __init__(self) -> None:
        self.terminated_at: float | None = None

    def terminate(self) -> None:
        self.terminated_at = time.monotonic()


async def test_a_block_past_its_deadline_has_its_connections_closed_then_raises() -> None:
    held, released = Held(), Held()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as raised:
        async with Deadline(0.2, "the work") as limit:
            deadline.hold(held)
            limit.hold(released)
            limit.release(released)
            await asyncio.sleep(5)
    assert 0.19 < time.monotonic() - started < 0.5
    assert held.terminated_at is not None and released.terminated_at is None
    assert "the work did not finish within 0.2s" in str(raised.value)
    assert database_unavailable(raised.value)  # what the services answer 503 for, and retry
    # The cancellation was the deadline's: the task goes on, not cancelled.
    await asyncio.sleep(0)
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_a_block_done_in_time_is_left_alone() -> None:
    held = Held()
    async with Deadline(0.2, "the work"):
        deadline.hold(held)
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # past the deadline: nothing fires any more
    assert held.terminated_at is None
    assert deadline.current() is None


async def test_time_spent_paused_does_not_count() -> None:
    async with Deadline(0.3, "the work") as limit:
        remaining = limit.pause()
        await asyncio.sleep(0.5)  # e.g. a client sending its body slowly
        limit.resume(remaining)
        await asyncio.sleep(0.1)
    with pytest.raises(DeadlineExceeded):
        async with Deadline(0.3, "the work") as limit:
            limit.resume(limit.pause())
            await asyncio.sleep(0.5)


async def test_disarmed_the_block_runs_to_its_end() -> None:
    async with Deadline(0.1, "the work") as limit:
        limit.disarm()
        await asyncio.sleep(0.2)


async def test_an_outer_deadline_closes_what_an_inner_block_holds() -> None:
    held = Held()
    with pytest.raises(DeadlineExceeded) as raised:
        async with Deadline(0.1, "outer"), Deadline(10, "inner"):
            deadline.hold(held)
            await asyncio.sleep(5)
    assert raised.value.what == "outer"
    assert held.terminated_at is not None


async def test_an_inner_deadline_raises_inside_the_outer_block() -> None:
    inner_failed = False
    async with Deadline(10, "outer"):
        try:
            async with Deadline(0.1, "inner"):
                await asyncio.sleep(5)
        except DeadlineExceeded as exc:
            inner_failed = exc.what == "inner"
        await asyncio.sleep(0.05)  # the outer block goes on: the cancellation was consumed
    assert inner_failed


async def test_a_cancellation_from_outside_is_not_taken_for_the_deadline() -> None:
    async def work() -> None:
        async with Deadline(10, "the work"):
            await asyncio.sleep(5)

    task = asyncio.create_task(work())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_each_task_has_its_own_deadline() -> None:
    async def work(seconds: float) -> str:
        try:
            async with Deadline(0.2, "the work"):
                await asyncio.sleep(seconds)
        except DeadlineExceeded:
            return "late"
        return "done"

    assert await asyncio.gather(work(0.05), work(1.0)) == ["done", "late"]


async def test_a_paused_deadline_does_not_count_the_block() -> None:
    async with Deadline(0.2, "the work"):
        async with deadline.paused():
            await asyncio.sleep(0.4)  # e.g. a webhook endpoint answering, with its own timeout
        await asyncio.sleep(0.05)
    async with deadline.paused():  # outside any deadline: nothing to pause
        await asyncio.sleep(0)


async def test_a_handler_that_ignores_its_deadline_still_gets_its_client_a_503_in_time() -> None:
    """An await that does not give way to the cancellation (a shielded clean-up waiting on a hung
    server) must not hold the answer: the middleware answers 503 once the grace after the deadline
    is over, and drops what the handler sends later."""
    finished = asyncio.Event()

    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.sleep(1.5))  # its clean-up, deaf to the cancellation
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})
        finished.set()

    app = RequestMiddleware(stubborn, "tests", db_timeout_s=0.3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        asked = time.monotonic()
        reply = await client.get("/v1/anything")
        took = time.monotonic() - asked
    assert reply.status_code == 503 and reply.json()["code"] == "database_unavailable", reply.text
    assert reply.headers["retry-after"] == "1" and "x-request-id" in reply.headers
    assert 0.3 + ANSWER_GRACE_S - 0.05 < took < 0.3 + ANSWER_GRACE_S + 0.5
    await asyncio.wait_for(finished.wait(), 3)  # it unwound in the background, its answer dropped


async def test_a_handler_that_answers_in_time_is_not_touched() -> None:
    async def quick(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = RequestMiddleware(quick, "tests", db_timeout_s=0.3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        reply = await client.get("/v1/anything")
    assert (reply.status_code, reply.content) == (200, b"ok") and "x-request-id" in reply.headers
