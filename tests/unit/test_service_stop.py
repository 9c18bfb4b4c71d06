"""A stopping service ends within a bound: it waits for its batch in flight, then cancels it (it is
redelivered), and gives each Kafka client a bounded time to close. The clients here are stand-ins
with aiokafka's `stop()`; what is tested is the lifespan's timing, not Kafka (test_restart runs the
real processes against a broker that goes away)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import pytest

from shared import service


class Client:
    """aiokafka's client as the stop sees it: `stop()`, which may never return (a commit or a leave
    retried against a broker that is gone)."""

    def __init__(self, hangs: bool) -> None:
        self.hangs = hangs
        self.stopped = False

    async def stop(self) -> None:
        if self.hangs:
            await asyncio.Event().wait()
        self.stopped = True


@pytest.fixture
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "STOP_BATCH_S", 0.3)
    monkeypatch.setattr(service, "STOP_CLIENT_S", 0.2)


async def stop(task: asyncio.Task[None], consumer: Client, producer: Client) -> float:
    started = time.monotonic()
    # A stop that never ends fails here instead of holding the test run.
    await asyncio.wait_for(service._stopped("svc", task, cast(Any, consumer), cast(Any, producer)), 5)
    return time.monotonic() - started


async def test_a_batch_that_commits_in_time_is_waited_for(short_bounds: None) -> None:
    committed = []

    async def batch() -> None:
        await asyncio.sleep(0.1)
        committed.append(True)

    task = asyncio.create_task(batch())
    consumer, producer = Client(hangs=False), Client(hangs=False)
    await stop(task, consumer, producer)
    assert committed == [True] and not task.cancelled()
    assert consumer.stopped and producer.stopped


async def test_a_batch_that_never_commits_is_cancelled_after_the_bound(
    short_bounds: None, caplog: pytest.LogCaptureFixture
) -> None:
    async def batch() -> None:
        await asyncio.Event().wait()  # aiokafka retrying the offset commit for ever

    task = asyncio.create_task(batch())
    consumer, producer = Client(hangs=False), Client(hangs=False)
    with caplog.at_level(logging.WARNING, logger=service.log.name):
        took = await stop(task, consumer, producer)
    assert task.cancelled()
    assert took >= service.STOP_BATCH_S  # it did wait for the batch first
    assert consumer.stopped and producer.stopped
    assert "did not commit within" in caplog.text and "redelivered" in caplog.text


async def test_clients_that_never_close_do_not_hold_the_process(
    short_bounds: None, caplog: pytest.LogCaptureFixture
) -> None:
    async def batch() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(batch())
    consumer, producer = Client(hangs=True), Client(hangs=False)
    with caplog.at_level(logging.WARNING, logger=service.log.name):
        took = await stop(task, consumer, producer)
    # Ends: the batch's bound, the cancelled batch's, and the stuck consumer's; the producer still closes.
    assert took < service.STOP_BATCH_S + 3 * service.STOP_CLIENT_S + 1.0
    assert producer.stopped and not consumer.stopped
    assert "Client did not stop cleanly" in caplog.text


async def test_a_loop_that_failed_is_logged_with_its_error(
    short_bounds: None, caplog: pytest.LogCaptureFixture
) -> None:
    async def batch() -> None:
        raise RuntimeError("the database refused the batch")

    task = asyncio.create_task(batch())
    await asyncio.sleep(0)
    consumer, producer = Client(hangs=False), Client(hangs=False)
    with caplog.at_level(logging.ERROR, logger=service.log.name):
        await stop(task, consumer, producer)
    assert "svc consumer loop ended with an error" in caplog.text
    assert "the database refused the batch" in caplog.text
    assert consumer.stopped and producer.stopped
