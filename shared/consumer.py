"""The one consumer loop every consuming service runs. A service supplies only its batch handler.

For each batch polled from Kafka the loop:
1. decodes every message with the service's decoder (the topic's TypeAdapter, or for the
   responses topic shared/wire's structs), while the batch before is still in its
   transaction; a message that does not decode goes to the dead-letter topic with its reason
   (in headers, the original bytes untouched) and the partition keeps flowing;
2. opens one database transaction, hands the decoded batch to the handler, commits;
3. commits the Kafka offsets, as the very last step;
4. meanwhile, a relay task publishes what the handlers queued in the transactional outbox, in
   order, while the loop goes on with the next batch (the rows are committed: a crash leaves
   them for the next start, which publishes them first).

A crash anywhere before step 3 redelivers the batch, so handlers must be idempotent (unique
keys, ON CONFLICT); that is the whole of our delivery guarantee: at-least-once plus idempotent
writes, never Kafka transactions. Database or broker failures are retried with backoff and
nothing is committed meanwhile. `stop()` (wired to SIGTERM) lets the batch in flight finish
and commit, then returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, MessageSizeTooLargeError
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import metrics
from shared.db import database_unavailable, describe_failure, lost_a_race
from shared.deadline import Deadline
from shared.logs import IDS, REQUEST_ID_HEADER, request_id_of
from shared.outbox import OutboxRelay

log = logging.getLogger(__name__)

E = TypeVar("E")
T = TypeVar("T")

TRACED_IDS = tuple(name for name in IDS if name != "request_id")  # the event's own ids a trace line shows


# Not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs ~8x, and one is made per event.
@dataclass(slots=True)
class Message(Generic[E]):
    event: E
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    request_id: str | None = None  # the x-request-id header ingest sent (shared/logs.py)


BatchHandler = Callable[[AsyncConnection, Sequence[Message[E]]], Awaitable[None]]
# A periodic step in its own transaction (e.g. publishing what batches left pending), run at most
# every `tick_s`, after a batch or while idle; its outbox rows are flushed like a batch's.
Tick = Callable[[AsyncConnection], Awaitable[None]]


def ticks(*steps: Tick) -> Tick:
    """Several periodic steps as the loop's one tick, in this order, in one transaction."""

    async def tick(conn: AsyncConnection) -> None:
        for step in steps:
            await step(conn)

    return tick


@dataclass(slots=True)
class Every:
    """A step run at most every `interval_s` within a faster tick (e.g. gauges read from the
    database every 30 s while the tick publishes every 0.25 s)."""

    step: Tick
    interval_s: float
    due: float = 0.0  # time.monotonic() from when it runs again

    async def __call__(self, conn: AsyncConnection) -> None:
        now = time.monotonic()
        if now >= self.due:
            self.due = now + self.interval_s
            await self.step(conn)


# A dead letter must fit the producer's request (aiokafka's max_request_size, 1 MiB with headers
# and overhead). A larger message is dead-lettered truncated to its first 64 KiB, with its size and
# SHA-256 in headers: before, a 3 MB poison message could not be dead-lettered at all, the batch was
# retried forever and the consumer never moved again.
DEAD_LETTER_MAX_BYTES = 900_000
DEAD_LETTER_KEEP_BYTES = 64 * 1024


FORCE_CUSTOM_PLANS = text("SET LOCAL plan_cache_mode = force_custom_plan")


RELAY_STOP_S = 10.0  # how long a stop waits for the relay's flush under way


class DeadLetterLimitExceeded(RuntimeError):
    """Too many undecodable messages in a row: more likely our bug than bad input."""


class _Stopped(Exception):
    pass


class RetryBatch(Exception):
    """Raised by a handler that found another transaction writing the same rows at the same time
    (two consumers on one partition during a rebalance): the transaction rolls back and the batch
    is applied again, now on top of what the other one committed."""


def is_transient(exc: BaseException) -> bool:
    """Failures worth retrying: the database or the broker is away, or a concurrent writer
    (RetryBatch, or a deadlock PostgreSQL broke by aborting this transaction); not a bug in our code."""
    if isinstance(exc, MessageSizeTooLargeError):  # retrying cannot make a message smaller
        return False
    return isinstance(exc, RetryBatch | KafkaError) or database_unavailable(exc) or lost_a_race(exc)


def describe_invalid(exc: Exception) -> str:
    """A dead-letter reason without the input values: they may hold personal data."""
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        ]
        return "; ".join(parts)[:1000]
    return f"{type(exc).__name__}: {exc}"[:1000]


@dataclass(frozen=True, slots=True)
class _Decoded(Generic[E]):
    records: dict[TopicPartition, list[ConsumerRecord]]
    good: list[Message[E]]
    dead: list[tuple[ConsumerRecord, str]]
    started: float  # when the batch was polled

    @property
    def size(self) -> int:
        return len(self.good) + len(self.dead)

    def extend(self, later: _Decoded[E]) -> None:
        """Records polled after this batch join it (each partition's records stay in order). Only
        for a batch not handed to `_apply` yet."""
        for tp, batch in later.records.items():
            self.records.setdefault(tp, []).extend(batch)
        self.good.extend(later.good)
        self.dead.extend(later.dead)


async def highwater_and_position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> tuple[int, int] | None:
    """The high watermark of the partition's last fetch and the consumer's position; None while
    either is unknown (nothing fetched yet, or a partition just assigned whose position needs the
    broker)."""
    highwater: int | None = consumer.highwater(tp)
    if highwater is None:
        return None
    try:  # known locally once consuming
        position: int = await asyncio.wait_for(consumer.position(tp), 0.1)
    except (TimeoutError, KafkaError, IllegalStateError):
        return None
    return highwater, position


async def unfetched(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """How far the high watermark of the partition's last fetch is ahead of the consumer's
    position; None while either is unknown."""
    known = await highwater_and_position(consumer, tp)
    return None if known is None else max(0, known[0] - known[1])


class LeadFirst:
    """Reads one topic of a loop first while it is behind: the others' partitions are paused until
    its fetches have caught up with its high watermark, for at most `hold_s` at a time. Past that
    hold they are read beside it again, as without a lead, until it has caught up once; so a lead
    that never catches up delays the others by `hold_s`, never for good.

    Scoring's rates loop leads with the invitations: an answer counted before its invitation is
    matched again when the invitation comes, so from a backlog of both, invitations first is ~1.3x
    faster (docs/benchmarks.md)."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, hold_s: float, service: str) -> None:
        self._consumer = consumer
        self.topic = topic
        self._hold_s = hold_s
        self._service = service
        self._since: float | None = None  # when the others were paused for this backlog
        self._spent = False  # the hold ran out before the lead caught up

    async def behind(self) -> bool:
        """Whether a partition of the lead topic is known to hold records not yet fetched: its last
        fetch's high watermark is past the consumer's position. Unknown (nothing fetched yet) is not
        behind: the first polls read every topic."""
        for tp in self._consumer.assignment():
            if tp.topic == self.topic and await unfetched(self._consumer, tp):
                return True
        return False

    async def order(self) -> None:
        """Pauses or resumes the other topics' partitions before a poll."""
        others = {tp for tp in self._consumer.assignment() if tp.topic != self.topic}
        if not await self.behind():
            self._since, self._spent = None, False
            self._set_paused(others, False)
            return
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if not self._spent and now - self._since > self._hold_s:
            self._spent = True
            log.info(
                "%s: %s still behind after %g s read first; reading every topic again until it catches up",
                self._service,
                self.topic,
                self._hold_s,
            )
        self._set_paused(others, not self._spent)

    def _set_paused(self, partitions: set[TopicPartition], paused: bool) -> None:
        now_paused = self._consumer.paused()
        if paused and (change := partitions - now_paused):
            self._consumer.pause(*change)
        elif not paused and (change := partitions & now_paused):
            self._consumer.resume(*change)


class ConsumerLoop(Generic[E]):
    def __init__(
        self,
        *,
        service: str,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        engine: AsyncEngine,
        decode: Callable[[bytes], E],
        handler: BatchHandler[E],
        deadletter_topic: str,
        outbox: OutboxRelay | None = None,
        max_batch: int = 5_000,
        poll_ms: int = 200,
        max_consecutive_dead: int = 1_000,
        tick: Tick | None = None,
        tick_s: float = 1.0,
        stuck_after_s: float = 60.0,
        batch_timeout_s: float = 5.0,
        shard: Callable[[E], int] | None = None,
        shards: int = 1,
        lead_topic: str | None = None,
        lead_hold_s: float = 30.0,
    ) -> None:
        self.service = service
        self._consumer = consumer
        self._producer = producer
        self._engine = engine
        self._decode = decode
        self._handler = handler
        self._deadletter_topic = deadletter_topic
        self._outbox = outbox
        self._max_batch = max_batch
        self._poll_ms = poll_ms
        self._max_consecutive_dead = max_consecutive_dead
        self._consecutive_dead = 0
        self._tick = tick
        self._shard = shard
        self._shards = shards if shard is not None else 1
        self._tick_s = tick_s
        self._next_tick = 0.0
        self._stopping = asyncio.Event()
        self._lag: dict[TopicPartition, int] = {}
        self._stuck_after_s = stuck_after_s
        self._batch_timeout_s = batch_timeout_s
        self._failing_since: float | None = None  # when the step being retried first failed
        self._uncommitted: dict[TopicPartition, int] = {}  # first offset of the batch in flight
        self.batches_committed = 0
        self._relay_wanted = asyncio.Event()  # committed outbox rows wait for the relay task
        self._relay_done = False  # set when stopping: the relay ends after the flush under way
        self._lead = LeadFirst(consumer, lead_topic, lead_hold_s, service) if lead_topic is not None else None

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def healthy(self) -> bool:
        """False once one step has been retried for longer than `stuck_after_s` (a database or
        broker that stays away): the service then reports not ready, so it is seen, not silent."""
        since = self._failing_since
        return since is None or time.monotonic() - since < self._stuck_after_s

    async def run(self) -> None:
        log.info("%s consumer loop started", self.service)
        # Each outcome's series at 0 from the start, so the first dead letter or retry is an
        # increase Prometheus sees (a series born at 1 has none) and the rules' queries have data.
        for topic in self._consumer.subscription():
            for outcome in ("processed", "deadlettered"):
                metrics.CONSUMER_EVENTS.labels(self.service, topic, outcome)
        metrics.CONSUMER_RETRIES.labels(self.service)
        relay: asyncio.Task[None] | None = None
        applying: asyncio.Task[None] | None = None  # the batch before, still in its transaction
        try:
            if self._outbox is not None:
                await self._retrying(self._outbox.flush)  # leftovers of a previous crash
                relay = asyncio.create_task(self._relay(), name=f"{self.service}-outbox-relay")
            while not self._stopping.is_set():
                if relay is not None and relay.done():
                    relay.result()  # the relay met what retrying cannot mend: the loop stops with it
                if self._lead is not None:
                    await self._lead.order()
                records = await self._consumer.getmany(timeout_ms=self._poll_ms, max_records=self._max_batch)
                # The next batch is fetched and decoded while the one before waits on PostgreSQL;
                # batches are still applied, and their offsets committed, one after another.
                decoded = await self._decode_batch(records) if records else None
                if applying is not None:
                    decoded = await self._gather_while(applying, decoded)
                    await applying  # its failure (or _Stopped) is the loop's
                    applying = None
                if self._stopping.is_set():
                    break  # a batch decoded meanwhile is left for redelivery
                if decoded is not None:
                    applying = asyncio.create_task(self._apply(decoded), name=f"{self.service}-batch")
                else:
                    await self._record_idle_lag()
                if self._tick is not None and time.monotonic() >= self._next_tick:
                    # Behind the batch in flight, never beside it; meanwhile the loop fetches and
                    # decodes the next batch, as it does while a batch applies.
                    applying = asyncio.create_task(self._tick_after(applying), name=f"{self.service}-tick")
            if applying is not None:
                await applying  # the batch in flight finishes and commits
                applying = None
        except _Stopped:
            log.info("%s consumer loop stopped while retrying; the batch will be redelivered", self.service)
        finally:
            if applying is not None:  # the loop failed meanwhile: the batch before still ends cleanly
                await asyncio.wait([applying])
                if not applying.cancelled():
                    applying.exception()  # retrieved; the loop's own failure is the one raised
            if relay is not None:
                await self._stop_relay(relay)
        log.info("%s consumer loop stopped", self.service)

    async def _relay(self) -> None:
        """Publishes committed outbox rows while the loop goes on with the next batch: the relay's
        sends and the next batch's database work overlap. Offsets need not wait for it (the rows
        are committed; a crash leaves them for the next start)."""
        assert self._outbox is not None
        while not self._relay_done:
            await self._relay_wanted.wait()
            self._relay_wanted.clear()
            sent = await self._retrying(self._outbox.flush)
            metrics.OUTBOX_PUBLISHED.labels(self.service).inc(sent)

    async def _stop_relay(self, relay: asyncio.Task[None]) -> None:
        """A last flush of what the loop committed, unless the broker is away (then the rows wait
        in the outbox for the next start). A flush under way is let finish first: cancelled after
        its events went out but before its transaction deleted their rows, it left them to be
        published a second time (by the last flush here, or the next start)."""
        self._relay_done = True
        self._relay_wanted.set()
        await asyncio.wait({relay}, timeout=RELAY_STOP_S)
        relay.cancel()  # still retrying a broker or database that is away: the rows wait for the next start
        with contextlib.suppress(asyncio.CancelledError, _Stopped):
            await relay
        assert self._outbox is not None
        try:
            sent = await asyncio.wait_for(self._outbox.flush(), 10)
            metrics.OUTBOX_PUBLISHED.labels(self.service).inc(sent)
        except Exception as exc:  # the outbox keeps them: published at the next start
            log.warning("%s: outbox left for the next start: %s", self.service, describe_failure(exc))

    GATHER_STEP_MS = 5  # how long one look for more records waits while the batch before applies

    async def _gather_while(self, applying: asyncio.Task[None], decoded: _Decoded[E] | None) -> _Decoded[E] | None:
        """Adds what arrives while the batch before is still in its transaction to the next one, up to
        `max_batch`: a trickle is applied in as few transactions as the database's pace allows (each
        costs the service and PostgreSQL the same few statements, whatever its size), and a record
        that arrives meanwhile is applied right after that batch rather than one batch later. From a
        backlog a poll already brings `max_batch`, and nothing waits."""
        size = decoded.size if decoded is not None else 0
        while size < self._max_batch and not applying.done() and not self._stopping.is_set():
            more = await self._consumer.getmany(timeout_ms=self.GATHER_STEP_MS, max_records=self._max_batch - size)
            if decoded is not None:
                # After a rebalance gave a partition back, it is read again from its last commit:
                # what the batch already holds of it is left out, so it never holds an offset twice.
                for tp, held in decoded.records.items():
                    if tp in more:
                        more[tp] = [r for r in more[tp] if r.offset > held[-1].offset]
            more = {tp: batch for tp, batch in more.items() if batch}
            if more:
                later = await self._decode_batch(more)
                if decoded is None:
                    decoded = later
                else:
                    decoded.extend(later)
                size = decoded.size
        return decoded

    DECODE_YIELD_EVERY = 500  # records decoded between two turns of the event loop

    async def _decode_batch(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> _Decoded[E]:
        """Decode a polled batch; a message that does not decode is set aside for the dead-letter
        topic. Yields now and then, so the batch before goes on with its statements meanwhile."""
        started = time.perf_counter()
        good: list[Message[E]] = []
        dead: list[tuple[ConsumerRecord, str]] = []
        decoded = 0
        for batch in records.values():
            for record in batch:
                decoded += 1
                if decoded % self.DECODE_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                try:
                    if record.value is None:
                        raise ValueError("message has no value")
                    event = self._decode(record.value)
                except (ValidationError, ValueError) as exc:
                    dead.append((record, describe_invalid(exc)))
                    self._consecutive_dead += 1
                    if self._consecutive_dead > self._max_consecutive_dead:
                        raise DeadLetterLimitExceeded(
                            f"{self._consecutive_dead} undecodable messages in a row on {record.topic}; "
                            "stopping rather than diverting the topic to the dead-letter queue"
                        ) from exc
                    continue
                self._consecutive_dead = 0
                good.append(
                    Message(
                        event,
                        record.topic,
                        record.partition,
                        record.offset,
                        record.timestamp,
                        request_id_of(record.headers) if record.headers else None,
                    )
                )
        return _Decoded(records, good, dead, started)

    async def _apply(self, decoded: _Decoded[E]) -> None:
        records, good, dead = decoded.records, decoded.good, decoded.dead
        self._uncommitted = {tp: batch[0].offset for tp, batch in records.items()}
        if dead:
            await self._retrying(lambda: self._send_dead(dead))
        if good:
            if self._shards > 1:
                await self._transact_sharded(good)
            else:
                await self._retrying(lambda: self._transact(good))
            self._relay_wanted.set()
        await self._commit({tp: batch[-1].offset + 1 for tp, batch in records.items()})
        if good and log.isEnabledFor(logging.DEBUG):
            self._trace(good)

        for tp, batch in records.items():
            outcome_dead = sum(1 for record, _ in dead if record.topic == tp.topic)
            metrics.CONSUMER_EVENTS.labels(self.service, tp.topic, "processed").inc(len(batch))
            if outcome_dead:
                metrics.CONSUMER_EVENTS.labels(self.service, tp.topic, "deadlettered").inc(outcome_dead)
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self._lag[tp] = max(0, highwater - (batch[-1].offset + 1))
        self._publish_lag()
        metrics.CONSUMER_BATCH_SIZE.labels(self.service).observe(len(good) + len(dead))
        metrics.CONSUMER_BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - decoded.started)
        self.batches_committed += 1

    def _trace(self, good: Sequence[Message[E]]) -> None:
        """At DEBUG, a line per committed event with its ids, so one response (by its request id or
        response id) can be followed from ingest through every consumer."""
        for message in good:
            event = message.event
            ids = {name: value for name in TRACED_IDS if (value := getattr(event, name, None)) is not None}
            if message.request_id is not None:
                ids["request_id"] = message.request_id
            log.debug(
                "%s applied %s from %s[%d]@%d",
                self.service,
                type(event).__name__,
                message.topic,
                message.partition,
                message.offset,
                extra=ids,
            )

    async def _tick_after(self, batch: asyncio.Task[None] | None) -> None:
        if batch is not None:
            await batch
        await self._retrying(self._run_tick)
        self._next_tick = time.monotonic() + self._tick_s

    async def _run_tick(self) -> None:
        assert self._tick is not None
        async with Deadline(self._batch_timeout_s, f"{self.service}'s periodic step"), self._engine.begin() as conn:
            await self._tick(conn)
        self._relay_wanted.set()

    async def _transact_sharded(self, batch: Sequence[Message[E]]) -> None:
        """The batch as one transaction per shard (the handler's own partition of its rows, e.g.
        by person: shards share no row), on as many connections at once: while one waits on
        PostgreSQL, the others' Python goes on. Each shard is retried on its own; the offsets are
        committed after all of them. A crash between two shards' commits redelivers the batch,
        which the handler's idempotent writes absorb, as any redelivery."""
        assert self._shard is not None
        parts: list[list[Message[E]]] = [[] for _ in range(self._shards)]
        for message in batch:
            parts[self._shard(message.event) % self._shards].append(message)
        tasks = [asyncio.ensure_future(self._retrying(partial(self._transact, part))) for part in parts if part]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one failed for good (or the loop stops): the others roll back
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _transact(self, batch: Sequence[Message[E]]) -> None:
        # Past the deadline (a database that hangs) the transaction is abandoned: its connection is
        # closed, so the server rolls it back, and `_retrying` applies the batch again from the start.
        # A COMMIT already sent may have been applied: the handlers' idempotent writes absorb the
        # second application, as they absorb a redelivery.
        async with (
            Deadline(self._batch_timeout_s, f"{self.service}'s batch"),
            self._engine.begin() as conn,  # the one commit point
        ):
            # A batch's statements carry thousands of values: after five runs of a prepared
            # statement PostgreSQL may switch to a generic plan that ignores them (follow-up's
            # latest-answer lookup went from 30 ms to 1 s per batch, from the sixth batch on).
            await conn.execute(FORCE_CUSTOM_PLANS)
            await self._handler(conn, batch)

    async def _send_dead(self, dead: list[tuple[ConsumerRecord, str]]) -> None:
        sent = []
        for record, reason in dead:
            request_id = request_id_of(record.headers)
            log.warning(
                "dead-lettering %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                reason,
                extra={"request_id": request_id},
            )
            headers = [
                ("nps-dlq-reason", reason.encode()),
                ("nps-dlq-service", self.service.encode()),
                ("nps-dlq-topic", record.topic.encode()),
                ("nps-dlq-partition", str(record.partition).encode()),
                ("nps-dlq-offset", str(record.offset).encode()),
            ]
            if request_id is not None:
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
            value, key = record.value or b"", (record.key or b"")[:DEAD_LETTER_KEEP_BYTES]
            if len(value) + len(key) > DEAD_LETTER_MAX_BYTES:
                headers += [
                    ("nps-dlq-truncated-from", str(len(value)).encode()),
                    ("nps-dlq-sha256", hashlib.sha256(value).hexdigest().encode()),
                ]
                value = value[:DEAD_LETTER_KEEP_BYTES]
            sent.append(await self._producer.send(self._deadletter_topic, value=value, key=key, headers=headers))
        await asyncio.gather(*sent)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance took the partitions away: the new owner re-reads from the last commit,
            # and the handler's idempotent writes make that harmless.
            log.warning("%s offset commit failed after a rebalance (%s); batch will be redelivered", self.service, exc)

    async def _retrying(self, action: Callable[[], Awaitable[T]]) -> T:
        delay = 0.2
        while True:
            try:
                result = await action()
                self._failing_since = None
                return result
            except Exception as exc:
                if not is_transient(exc):
                    raise
                metrics.CONSUMER_RETRIES.labels(self.service).inc()
                log.warning("%s: %s; retrying in %.1fs, nothing committed", self.service, describe_failure(exc), delay)
                log.debug("%s: the failure in full", self.service, exc_info=exc)
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                await self._lag_while_stuck()
            if self._stopping.is_set():
                raise _Stopped
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _lag_while_stuck(self) -> None:
        """While a batch is retried nothing is fetched, so the lag is read from the broker's end
        offsets: it keeps growing in the metric as responses keep arriving."""
        if not self._uncommitted:
            return
        try:
            ends = await asyncio.wait_for(self._consumer.end_offsets(list(self._uncommitted)), 2.0)
        except (TimeoutError, KafkaError, OSError):
            return  # the broker may be what is away; the last figures stay
        for tp, first in self._uncommitted.items():
            # The last fetch's high watermark too: tansu's ListOffsets can lag what it serves.
            end = max(ends.get(tp) or 0, self._consumer.highwater(tp) or 0)
            self._lag[tp] = max(0, end - first)
        self._publish_lag()

    async def _record_idle_lag(self) -> None:
        """An empty poll: each assigned partition is as far behind as the high watermark its last
        fetch saw is ahead of the consumer's position. Caught up, that is 0; with a broker that
        stopped answering fetches, the lag it had stays (it used to read 0: an empty poll was
        taken for caught up)."""
        suspects = []  # (partition, position) where the last fetch's log ended before the position
        for tp in self._consumer.assignment():
            known = await highwater_and_position(self._consumer, tp)
            self._lag[tp] = 0 if known is None else max(0, known[0] - known[1])
            if known is not None and known[0] < known[1]:
                suspects.append((tp, known[1]))
        self._publish_lag()
        if suspects:
            await self._reread_from_the_beginning(suspects)

    async def _reread_from_the_beginning(self, suspects: list[tuple[TopicPartition, int]]) -> None:
        """A partition whose log ends before the consumer's position (its broker lost it: the
        embedded broker restarted empty and the launcher replayed into it, or a topic was
        recreated) is read again from its beginning; the handlers' idempotent writes absorb what
        was read before. Apache Kafka answers such a fetch OFFSET_OUT_OF_RANGE and the client
        resets to the earliest offset by itself; the embedded broker answers it with nothing, so the
        consumer sat at its old position and read nothing of the new log until it grew past it,
        then skipped what lay below. The last fetch's high watermark says when to ask (`suspects`);
        the broker's end offset, asked then, decides."""
        try:
            ends = await asyncio.wait_for(self._consumer.end_offsets([tp for tp, _ in suspects]), 2.0)
        except (TimeoutError, KafkaError, OSError):
            return  # asked again after the next empty poll
        went_back = [(tp, position, ends[tp]) for tp, position in suspects if ends.get(tp, position) < position]
        for tp, position, end in went_back:
            log.warning(
                "%s: %s[%d] ends at offset %d, before this consumer's position %d (the broker lost it, or the "
                "topic was recreated): reading it again from its beginning",
                self.service,
                tp.topic,
                tp.partition,
                end,
                position,
            )
        if went_back:
            await self._consumer.seek_to_beginning(*(tp for tp, _, _ in went_back))

    def _publish_lag(self) -> None:
        per_topic: dict[str, int] = {}
        for tp, lag in self._lag.items():
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + lag
        for topic, lag in per_topic.items():
            metrics.CONSUMER_LAG.labels(self.service, topic).set(lag)
