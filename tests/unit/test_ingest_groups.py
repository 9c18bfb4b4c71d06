"""Single submissions are recorded and published in groups (ingest_service/handlers.Ingest.run):
the coordination alone, with the two ports played by in-memory stand-ins (the database and the
broker behind them are tested in tests/integration/test_ingest_store.py and test_ingest_api.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from ingest_service.domain import Limits, Submission, SubmitResponse
from ingest_service.handlers import Conflict, Ingest, OutcomeUnknown, StoreUnavailable
from shared import logs

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
LIMITS = Limits(timedelta(seconds=300), timedelta(days=1095))


class Store:
    """Fingerprints by response_id, like ingest.responses; `away` makes it StoreUnavailable."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.calls: list[list[str]] = []
        self.away = False

    async def record_all(self, items: Sequence[Submission]) -> dict[str, str]:
        self.calls.append([s.response_id for s in items])
        await asyncio.sleep(0)  # a round trip: requests arriving meanwhile form the next group
        if self.away:
            raise StoreUnavailable("ConnectionRefusedError")
        existing = {s.response_id: self.rows[s.response_id] for s in items if s.response_id in self.rows}
        for s in items:
            self.rows.setdefault(s.response_id, s.fingerprint)
        return existing

    async def record_group(self, items: Sequence[Submission]) -> dict[str, str]:
        return await self.record_all(items)


class Broker:
    """Acknowledges what it is sent once `open` is set, except the keys in `refuse`."""

    timeout_s = 0.9

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, str | None]] = []
        self.calls: list[tuple[list[bytes], float]] = []  # the keys of each call, and its timeout
        self.refuse: set[bytes] = set()
        self.open = asyncio.Event()
        self.open.set()
        self.broken = False  # answers a list of the wrong length, as a bug would

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        raise AssertionError("single submissions are published in groups")

    async def publish_many(
        self,
        topic: str,
        items: Sequence[tuple[bytes, bytes]],
        request_ids: Sequence[str | None] | None = None,
        timeout_s: float | None = None,
    ) -> list[bool]:
        assert request_ids is not None and len(request_ids) == len(items)
        assert timeout_s is not None and 0 < timeout_s <= self.timeout_s
        self.calls.append(([k for k, _ in items], timeout_s))
        try:
            async with asyncio.timeout(timeout_s):
                await self.open.wait()
        except TimeoutError:
            return [False] * len(items)
        self.sent += [(k, v, r) for (k, v), r in zip(items, request_ids, strict=True)]
        return [] if self.broken else [k not in self.refuse for k, _ in items]


@asynccontextmanager
async def running(store: Store, broker: Broker) -> AsyncIterator[Ingest]:
    ingest = Ingest(broker, store, "t.responses", LIMITS)
    worker = asyncio.create_task(ingest.run())
    try:
        yield ingest
    finally:
        worker.cancel()


async def submit(ingest: Ingest, response_id: str, score: int = 7, request_id: str | None = None) -> str:
    """The outcome as the API would name it."""
    logs.set_request_id(request_id)  # this task's context, as a request's
    command = SubmitResponse(response_id=response_id, respondent_id=f"u-{response_id}", score=score)
    try:
        await ingest.submit(command, NOW, "tests")
    except Conflict:
        return "conflict"
    except OutcomeUnknown:
        return "unknown"
    except StoreUnavailable:
        return "store"
    return "accepted"


async def test_concurrent_submissions_share_a_group_and_each_answers_for_itself() -> None:
    store, broker = Store(), Broker()
    broker.refuse.add(b"u-r3")
    async with running(store, broker) as ingest:
        assert await submit(ingest, "r0", score=1) == "accepted"
        outcomes = await asyncio.gather(
            submit(ingest, "r1", request_id="req-1"),
            submit(ingest, "r0", score=1, request_id="req-retry"),  # a retry: published again
            submit(ingest, "r0", score=9),  # the id with another body
            submit(ingest, "r3"),  # the broker does not acknowledge it
            submit(ingest, "r4", score=2, request_id="req-4"),
            submit(ingest, "r4", score=3),  # the same id with two bodies in one group: the first wins
        )
    assert outcomes == ["accepted", "accepted", "conflict", "unknown", "accepted", "conflict"]
    assert store.calls == [["r0"], ["r1", "r0", "r3", "r4"]]  # one statement for the five, each id once
    # Each record carries the id of the request it came from; conflicts are never published.
    assert [(k, r) for k, _, r in broker.sent] == [
        (b"u-r0", None),
        (b"u-r1", "req-1"),
        (b"u-r0", "req-retry"),
        (b"u-r3", None),  # sent, never acknowledged
        (b"u-r4", "req-4"),
    ]


async def test_the_next_group_is_recorded_while_the_one_before_is_still_being_published() -> None:
    store, broker = Store(), Broker()
    broker.open.clear()  # the broker holds its acknowledgements
    async with running(store, broker) as ingest:
        first = asyncio.create_task(submit(ingest, "a"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(submit(ingest, "b"))
        await asyncio.sleep(0.01)
        assert store.calls == [["a"], ["b"]] and not first.done()
        broker.open.set()
        assert await asyncio.gather(first, second) == ["accepted", "accepted"]


async def test_a_database_away_fails_the_whole_group_and_the_worker_goes_on() -> None:
    store, broker = Store(), Broker()
    async with running(store, broker) as ingest:
        store.away = True
        assert await asyncio.gather(submit(ingest, "a"), submit(ingest, "b")) == ["store", "store"]
        store.away = False
        assert await submit(ingest, "c") == "accepted"
    assert broker.sent and [k for k, _, _ in broker.sent] == [b"u-c"]


async def test_a_request_that_went_away_leaves_the_others_answered() -> None:
    store, broker = Store(), Broker()
    broker.open.clear()
    async with running(store, broker) as ingest:
        gone = asyncio.create_task(submit(ingest, "gone"))
        kept = asyncio.create_task(submit(ingest, "kept"))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client hung up while the broker had not yet answered
        broker.open.set()
        assert await kept == "accepted"
        with pytest.raises(asyncio.CancelledError):
            await gone


async def test_groups_recorded_while_the_broker_has_one_go_together_and_wait_no_longer_than_their_own_time() -> None:
    store, broker = Store(), Broker()
    broker.open.clear()  # never acknowledges
    broker.timeout_s = 0.3
    async with running(store, broker) as ingest:
        first = asyncio.create_task(submit(ingest, "a"))
        await asyncio.sleep(0.1)  # a's call is out; b and c are recorded (two groups) meanwhile
        later = [asyncio.create_task(submit(ingest, "b"))]
        await asyncio.sleep(0.01)
        later.append(asyncio.create_task(submit(ingest, "c")))
        assert await asyncio.gather(first, *later) == ["unknown"] * 3
    assert store.calls == [["a"], ["b"], ["c"]]
    assert [keys for keys, _ in broker.calls] == [[b"u-a"], [b"u-b", b"u-c"]]
    # b's wait began 0.1 s after a's, so the second call has what is left of b's 0.3 s, not 0.3 s.
    (_, whole), (_, rest) = broker.calls
    assert 0.28 < whole <= 0.3 and 0 < rest < 0.25


async def test_a_publisher_that_breaks_its_contract_fails_the_requests_instead_of_hanging_them() -> None:
    store, broker = Store(), Broker()
    broker.broken = True
    async with running(store, broker) as ingest:
        with pytest.raises(ValueError):
            await asyncio.wait_for(submit(ingest, "a"), 5)
        broker.broken = False
        assert await submit(ingest, "b") == "accepted"  # the publishing task goes on
