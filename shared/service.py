"""Wiring shared by the three consuming services: engine, producer, consumer, outbox relay, the
consumer loop and the API-key gate, started with the HTTP app and stopped with it (SIGTERM: uvicorn stops
serving, then the loop finishes its batch, commits and returns)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.auth import gate_for
from shared.consumer import BatchHandler, ConsumerLoop, Tick
from shared.db import database_reachable, make_engine
from shared.http import ReadinessCheck, report_worker_failure
from shared.kafka import broker_reachable, make_consumer, make_producer
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

E = TypeVar("E")


@dataclass
class ConsumerSpec(Generic[E]):
    service: str
    schema: str  # the service's own PostgreSQL schema (and its outbox)
    topic: str
    group_id: str
    decode: Callable[[bytes], E]
    handler: BatchHandler[E]
    tick: Tick | None = None
    tick_s: float = 1.0
    # The handler's rows split by this (e.g. a person): a batch is applied as `shards` transactions
    # at once, one per shard (see ConsumerLoop._transact_sharded).
    shard: Callable[[E], int] | None = None
    shards: int = 1
    # Further topics the same loop consumes (delivery reads follow-ups, tickets, alerts, erasures).
    more_topics: tuple[str, ...] = ()
    # A topic read first while it is behind, the others paused for at most `lead_hold_s` at a time
    # (scoring's rates loop: invitations before the answers to them; see consumer.LeadFirst).
    lead_topic: str | None = None
    lead_hold_s: float = 30.0
    # Closed after the loop stops (e.g. alerts' HTTP client to the themes service).
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()
    # Run with the engine before the loop starts; an error refuses the start (e.g. follow-up's
    # policy experiments against those recorded).
    prepare: Callable[[AsyncEngine], Awaitable[None]] | None = None


@dataclass
class Resources:
    engine: AsyncEngine
    producer: AIOKafkaProducer
    loop: ConsumerLoop[Any]
    db_timeout_s: float = 2.0

    # Further consumer loops of the same service (their own groups), by readiness check name.
    more: Mapping[str, ReadinessCheck] = field(default_factory=dict)

    def checks(self) -> Mapping[str, ReadinessCheck]:
        return {
            "database": lambda: database_reachable(self.engine, self.db_timeout_s),
            "broker": lambda: broker_reachable(self.producer),
            "consumer": self.loop.healthy,
            **self.more,
        }


@dataclass
class RunningLoop:
    """A consumer loop at work, and what it runs on."""

    resources: Resources
    consumer: AIOKafkaConsumer
    task: asyncio.Task[None]


@asynccontextmanager
async def running_loop(
    settings: ServiceSettings, spec: ConsumerSpec[Any], client_id: str
) -> AsyncIterator[RunningLoop]:
    """Engine, producer, consumer and the consumer loop of one service, the loop running as a task.
    On exit the loop is asked to stop (it finishes and commits its batch), then all is closed. What
    a service's lifespan runs, and what the integration tests run the real wiring with."""
    engine = make_engine(settings.require_database_url(), timeout_s=settings.db_timeout_s, name=client_id)
    if spec.prepare is not None:
        try:
            await spec.prepare(engine)
        except BaseException:
            await engine.dispose()
            raise
    producer = make_producer(settings, client_id=client_id)
    topics = (spec.topic, *spec.more_topics)
    consumer = make_consumer(settings, *topics, group_id=spec.group_id, client_id=client_id)
    try:
        await producer.start()
        await consumer.start()  # joins the group: seconds on a new group (the broker waits for members)
    except BaseException:  # the broker away at start, or a sibling loop's start failed (cancelled)
        for client in (consumer, producer):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.stop(), STOP_CLIENT_S)
        await engine.dispose()
        raise
    loop: ConsumerLoop[Any] = ConsumerLoop(
        service=spec.service,
        consumer=consumer,
        producer=producer,
        engine=engine,
        decode=spec.decode,
        handler=spec.handler,
        deadletter_topic=settings.topics.deadletter,
        outbox=OutboxRelay(engine, producer, spec.schema),
        max_batch=settings.consumer_max_batch,
        poll_ms=settings.consumer_poll_ms,
        max_consecutive_dead=settings.deadletter_max_consecutive,
        tick=spec.tick,
        tick_s=spec.tick_s,
        stuck_after_s=settings.consumer_stuck_after_s,
        batch_timeout_s=settings.consumer_batch_timeout_s,
        shard=spec.shard,
        shards=spec.shards,
        lead_topic=spec.lead_topic,
        lead_hold_s=spec.lead_hold_s,
    )
    task = asyncio.create_task(loop.run(), name=f"{spec.service}-consumer")
    log.info("%s consuming %s as group %s", spec.service, ", ".join(topics), spec.group_id)
    try:
        yield RunningLoop(Resources(engine, producer, loop, settings.db_timeout_s), consumer, task)
    finally:
        loop.stop()
        await _stopped(spec.service, task, consumer, producer)
        await engine.dispose()
        for close in spec.closers:
            await close()


# How long a stopping service waits for its batch in flight to commit, then for its Kafka clients
# to close. With the broker gone (or gone and back empty) aiokafka retries an offset commit, and a
# consumer's leave, for ever: a SIGTERM must still end the process (the batch is redelivered).
STOP_BATCH_S = 20.0
STOP_CLIENT_S = 5.0


async def _stopped(
    service: str, task: asyncio.Task[None], consumer: AIOKafkaConsumer, producer: AIOKafkaProducer
) -> None:
    done, _ = await asyncio.wait([task], timeout=STOP_BATCH_S)
    if not done:
        log.warning(
            "%s: the batch in flight did not commit within %.0f s of the stop (broker or database away?); "
            "stopping without it: it will be redelivered",
            service,
            STOP_BATCH_S,
        )
        task.cancel()
        await asyncio.wait([task], timeout=STOP_CLIENT_S)
    elif not task.cancelled() and task.exception() is not None:
        log.error("%s consumer loop ended with an error", service, exc_info=task.exception())
    for client in (consumer, producer):
        try:
            await asyncio.wait_for(client.stop(), STOP_CLIENT_S)
        except Exception as exc:  # the process is ending either way
            log.warning("%s: %s did not stop cleanly: %r", service, type(client).__name__, exc)


# A batch makes tens of objects per event (decoded events, plans, rows, events), nearly all freed by
# reference counting; at Python's default threshold (700) the cycle collector runs thousands of
# times per batch and walks the batch's objects each time. At 50,000 follow-up's handler used ~10%
# less CPU than at the default; at 500,000 (and a full young-generation sweep every 10) the
# follow-up service another ~10% less (200,000 events, two alternating pairs: 15.2/16.2 s against
# 16.5/19.0 s of process CPU); 1,000,000 was no better. Cyclic garbage is still collected.
GC_THRESHOLD = (500_000, 10, 1_000)


def tune_gc() -> None:
    """For a consumer process, once started: what was loaded so far (modules, settings, compiled
    templates) is never garbage, so the collector stops walking it, and it runs less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def consuming_lifespan(
    settings: ServiceSettings, spec: ConsumerSpec[Any], *more: ConsumerSpec[Any]
) -> Callable[[FastAPI], Any]:
    """The service's consumer loop (and `more` loops of their own groups, e.g. scoring's response
    rates), running while the app serves; `app.state.resources` is the first loop's, and readiness
    checks every loop."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_gc()
        async with contextlib.AsyncExitStack() as stack:
            # Started side by side: each joins its own group, which takes the broker seconds (5-6 s
            # on the embedded one, group.initial.rebalance.delay.ms on Apache Kafka), not one after the other.
            async with asyncio.TaskGroup() as starting:
                started = [
                    starting.create_task(
                        stack.enter_async_context(running_loop(settings, s, client_id=f"nps-{s.service}"))
                    )
                    for s in (spec, *more)
                ]
            running, *others = [task.result() for task in started]
            app.state.resources, app.state.engine = running.resources, running.resources.engine
            running.resources.more = {
                f"consumer:{o_spec.service}": o.resources.loop.healthy for o, o_spec in zip(others, more, strict=True)
            }
            for loop in (running, *others):
                loop.task.add_done_callback(lambda t: report_worker_failure(app, t))
            async with gate_for(app, running.resources.engine, settings):
                yield

    return lifespan


async def read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection for a query API's reads, returned to the pool when the answer is sent. Every
    service's lifespan leaves its engine in `app.state.engine`. The route's own path, query and
    header parameters are checked first: FastAPI checks them only after every dependency, so a bad
    one was a 503 (or waited for the database's deadline) while the database was away, where it is
    the caller's 422 whatever the database's state."""
    route = request.scope.get("route")
    if isinstance(route, APIRoute):
        dependant = route.dependant
        errors = [
            *request_params_to_args(dependant.path_params, request.path_params)[1],
            *request_params_to_args(dependant.query_params, request.query_params)[1],
            *request_params_to_args(dependant.header_params, request.headers)[1],
        ]
        if errors:
            raise RequestValidationError(errors)
    engine: AsyncEngine = request.app.state.engine
    async with engine.connect() as conn:
        yield conn


ReadConnection = Annotated[AsyncConnection, Depends(read_connection)]
