"""Helpers for the integration and end-to-end tiers: real broker, real PostgreSQL, no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import httpx
import pytest
import sqlalchemy as sa
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.embedded import free_port
from services.infra import create_topics, wait_ready
from shared import service
from shared.auth import KeyStore, hash_api_key, new_api_key, start_gate
from shared.consumer import ConsumerLoop, RetryBatch
from shared.db import make_engine
from shared.events import (
    AlertContributor,
    AlertExplanation,
    AlertFired,
    AlertWindowCounts,
    ResponseRevised,
    ResponseSubmitted,
)
from shared.kafka import TopicMissing, reading_from_start
from shared.ratelimit import RateLimiter
from shared.service import ConsumerSpec
from shared.settings import ServiceSettings
from tests.scale import examples

# The pseudonym secret every test service runs with (NPS_PSEUDONYM_SECRET).
TEST_PSEUDONYM_SECRET = "test-pseudonym-secret-0123456789abcdef"
# The key that seals the secrets delivery keeps (NPS_SECRETS_KEY), in every test service.
TEST_SECRETS_KEY = "dGVzdC1zZWNyZXRzLWtleS0wMTIzNDU2Nzg5YWJjZGU="
# Short group timings: a consumer joins in ~1 s and a replacement rejoins in ~4 s. The poll keeps the
# product's 200 ms: a batch is handed over as soon as it is fetched, whatever the poll, and a 50 ms
# poll only woke each idle consumer four times as often (an idle test loop: 27% of a core, 20% with 200).
FAST_GROUP = {
    "consumer_session_timeout_ms": 2_000,
    "consumer_heartbeat_ms": 300,
    "consumer_rebalance_timeout_ms": 1_000,
}
FAST_GROUP_ENV = {
    "NPS_CONSUMER_SESSION_TIMEOUT_MS": "2000",
    "NPS_CONSUMER_HEARTBEAT_MS": "300",
    "NPS_CONSUMER_REBALANCE_TIMEOUT_MS": "1000",
}


# Bodies ingest refuses with a 422 naming the field, in every tier that posts a response (the domain's
# validation, the API, the running loop); each tier's test adds its own cases after these.
INVALID_BASICS: list[tuple[dict[str, Any], str]] = [
    ({"respondent_id": "u", "score": 11}, "score"),
    ({"respondent_id": "u", "score": -1}, "score"),
    ({"respondent_id": "u", "score": 6.5}, "score"),
    ({"respondent_id": "u", "score": "7"}, "score"),
    ({"respondent_id": "u", "score": True}, "score"),
    ({"respondent_id": "u", "score": None}, "score"),
    ({"score": 7}, "respondent_id"),
]


def with_database(url: str, name: str) -> str:
    """The same server URL, pointing at another database."""
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


S = TypeVar("S", bound=ServiceSettings)


async def truncate(database_url: str, schema: str, tables: Sequence[str]) -> None:
    """Empty these tables of `schema` (a property test's examples share one database)."""
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"TRUNCATE {', '.join(f'{schema}.{t}' for t in tables)}"))
    finally:
        await engine.dispose()


def service_settings(
    bootstrap: str,
    database_url: str,
    namespace: str,
    settings_class: type[S] = ServiceSettings,  # type: ignore[assignment]
    **extra: Any,
) -> S:
    """A service's settings for a test: its own topics, the fast consumer-group timings."""
    return settings_class(
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,
        topic_namespace=namespace,
        topic_partitions=3,
        pseudonym_secret=TEST_PSEUDONYM_SECRET,
        secrets_key=TEST_SECRETS_KEY,
        **{**FAST_GROUP, **extra},
    )


def submitted_event(
    rid: str,
    score: int,
    now: datetime,
    days_ago: int = 0,
    channel: str | None = None,
    comment: str | None = None,
    **attributes: str,
) -> ResponseSubmitted:
    """A ResponseSubmitted as ingest would publish it, answered `days_ago` days before `now`."""
    return ResponseSubmitted(
        response_id=rid,
        respondent_id=f"u-{rid}",
        score=score,
        comment=comment,
        channel=channel,
        answered_at=now - timedelta(days=days_ago),
        attributes=attributes,
        submitted_at=now,
    )


async def topic_holding(settings: ServiceSettings, values: Sequence[bytes], key: bytes = b"k") -> str:
    """Create the namespace's topics and put `values` on its responses topic; returns that topic."""
    await create_topics(settings)
    async with started_producer(settings.require_bootstrap()) as producer:
        await produce(producer, settings.topics.responses, [(key, v) for v in values])
    return settings.topics.responses


@asynccontextmanager
async def started_producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def produce(producer: AIOKafkaProducer, topic: str, items: Sequence[tuple[bytes | None, bytes]]) -> None:
    futures = [await producer.send(topic, value=value, key=key) for key, value in items]
    await asyncio.gather(*futures)


async def read_topic(
    bootstrap: str, topic: str, *, expect: int | None = None, timeout: float = 10.0, settle: float = 1.0
) -> list[ConsumerRecord]:
    """Everything on a topic, read with a plain consumer (no group): what any Kafka client sees.

    Reads until `expect` records arrived (then `settle` more seconds, to catch extras), or until
    `timeout` when `expect` is None."""
    deadline = time.monotonic() + timeout
    records: list[ConsumerRecord] = []
    try:
        async with reading_from_start(bootstrap, topic, wait_s=timeout) as consumer:
            settle_until: float | None = None
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=100)
                for msgs in batch.values():
                    records.extend(msgs)
                if expect is not None and len(records) >= expect:
                    if settle_until is None:
                        settle_until = time.monotonic() + settle
                    elif time.monotonic() >= settle_until:
                        break
    except TopicMissing:
        return []
    return records


async def clear_of_midnight(seconds: float) -> datetime:
    """The real time (UTC), at least `seconds` before the next midnight: a test whose dates are relative
    to today and that runs the `nps` command (its own clock) waits out a midnight it could cross."""
    now = datetime.now(UTC)
    left = (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC) - now).total_seconds()
    if left < seconds:
        await asyncio.sleep(left + 1)
        now = datetime.now(UTC)
    return now


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)


@dataclass
class LoopUnderTest:
    loop: ConsumerLoop[Any]
    task: asyncio.Task[None]
    engine: AsyncEngine
    consumer: AIOKafkaConsumer

    async def committed(self) -> dict[TopicPartition, int | None]:
        return {tp: await self.consumer.committed(tp) for tp in self.consumer.assignment()}

    async def total_committed(self) -> int:
        return sum(offset or 0 for offset in (await self.committed()).values())

    def committed_at_least(self, n: int) -> Callable[[], Awaitable[bool]]:
        """For `eventually`: the group's offsets cover at least n messages."""

        async def check() -> bool:
            return await self.total_committed() >= n

        return check


@asynccontextmanager
async def running_loop(settings: ServiceSettings, spec: ConsumerSpec[Any]) -> AsyncIterator[LoopUnderTest]:
    """One real consumer loop (the services' own wiring) against the real broker and database."""
    async with service.running_loop(settings, spec, client_id=f"test-{spec.service}") as running:
        yield LoopUnderTest(running.resources.loop, running.task, running.resources.engine, running.consumer)


async def serve_in_process(app: FastAPI, engine: AsyncEngine) -> dict[str, str]:
    """What a consuming service's lifespan gives its query API, for an app driven in-process
    (httpx's ASGITransport runs no lifespan): its engine, and the key gate with one admin key.
    Returns the Authorization header to send."""
    app.state.resources = service.Resources(engine=engine, producer=cast(Any, None), loop=cast(Any, None))
    app.state.engine = engine
    key = new_api_key()
    await KeyStore(engine).create(f"tests-{uuid.uuid4().hex[:8]}", hash_api_key(key), ["admin"], actor="tests")
    app.state.gate, _ = await start_gate(engine, 60, RateLimiter(0, 1))
    return {"Authorization": f"Bearer {key}"}


class Keyed(Protocol):
    respondent_id: str

    def to_bytes(self) -> bytes: ...


def keyed(events: Sequence[Keyed]) -> list[tuple[bytes | None, bytes]]:
    """Events as ingest publishes them: keyed by the respondent, so a person's events stay in order."""
    return [(e.respondent_id.encode(), e.to_bytes()) for e in events]


@dataclass
class Served:
    """A consuming service's app on its real consumer loop, driven in-process: a producer onto the
    broker and a client holding an admin key (`served`)."""

    app: FastAPI
    loop: LoopUnderTest
    producer: AIOKafkaProducer
    client: httpx.AsyncClient  # holding an admin key

    async def publish(self, topic: str, events: Sequence[Keyed]) -> None:
        await produce(self.producer, topic, keyed(events))

    async def key(self, scopes: list[str]) -> dict[str, str]:
        """Another key, with these scopes (the Authorization header to send)."""
        return await add_key(self.app, self.loop.engine, scopes)


@asynccontextmanager
async def served(app: FastAPI, settings: ServiceSettings, spec: ConsumerSpec[Any]) -> AsyncIterator[Served]:
    async with started_producer(settings.require_bootstrap()) as producer, running_loop(settings, spec) as loop:
        admin = await serve_in_process(app, loop.engine)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service", headers=admin) as client:
            yield Served(app, loop, producer, client)


@dataclass(frozen=True)
class Run:
    """One test's people and responses, kept apart from other tests' in a shared database: ids are
    `<run>-<name>`, answered and submitted `now`."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def of(self, name: str) -> str:
        return f"{self.id}-{name}"

    def submitted(self, rid: str, score: int, who: str | None = None, **fields: Any) -> ResponseSubmitted:
        """Response `rid` of person `who` (default: a person of its own, named like it)."""
        return ResponseSubmitted(
            response_id=self.of(rid), respondent_id=self.of(who or rid), score=score, answered_at=self.now,
            submitted_at=self.now, **fields,
        )  # fmt: skip

    def revised(self, rid: str, score: int, version: int, who: str | None = None) -> ResponseRevised:
        """Version `version` of response `rid`, revised `version` seconds after `now`."""
        return ResponseRevised(
            response_id=self.of(rid), respondent_id=self.of(who or rid), version=version, score=score,
            answered_at=self.now, revised_at=self.now + timedelta(seconds=version),
        )  # fmt: skip


async def add_key(app: FastAPI, engine: AsyncEngine, scopes: list[str]) -> dict[str, str]:
    """Another key for an app driven in-process (after serve_in_process), known to its gate at once;
    returns the Authorization header to send."""
    key = new_api_key()
    await KeyStore(engine).create(f"tests-{uuid.uuid4().hex[:8]}", hash_api_key(key), scopes, actor="tests")
    await app.state.gate.keys.load()
    return {"Authorization": f"Bearer {key}"}


@dataclass
class ServiceProcess:
    """One service run as `nps <service>`, the way a deployment runs it."""

    process: subprocess.Popen[bytes]
    url: str
    env: dict[str, str]
    log: Path

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def nps_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(FAST_GROUP_ENV)
    env["NPS_PSEUDONYM_SECRET"] = TEST_PSEUDONYM_SECRET
    env["NPS_SECRETS_KEY"] = TEST_SECRETS_KEY
    env.update(overrides)
    return env


def nps(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


# The commands `nps_here` may run: they work on the database or the topics, start no process and hold
# nothing once they return (the logging they set up is put back as it was). Not `nps scoring` and the
# like by themselves: those run a service.
IN_PROCESS_COMMANDS = frozenset({"keys", "audit", "webhooks"})
IN_PROCESS_ACTIONS = frozenset(
    {("scoring", "rebuild"), ("scoring", "prune"), ("themes", "rebuild"), ("themes", "prune"), ("ingest", "replay")}
)
_ENVIRON = threading.Lock()


@contextmanager
def _logging_kept() -> Iterator[None]:
    """What a command's `logs.configure` changes (the root logger's handlers and level; aiokafka's and
    uvicorn's loggers), put back afterwards: its handler writes to the command's captured stderr."""
    named = [logging.getLogger(name) for name in ("aiokafka", "uvicorn", "uvicorn.error", "uvicorn.access")]
    root = logging.getLogger()
    kept = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in (root, *named)]
    try:
        yield
    finally:
        for lg, handlers, level, propagate in kept:
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate


def nps_here(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`nps ARGS` run in this process: the same code as `nps` from a terminal, without the start of
    an interpreter and its imports (2-4 s a call on a loaded 2-core machine). For a test about what
    a command does; the tests of the entry point itself keep `nps`. Runs in a thread of its own (the
    command runs its own event loop), with `env` as the whole environment while it runs."""
    from services.cli import main

    if args[0] not in IN_PROCESS_COMMANDS and tuple(args[:2]) not in IN_PROCESS_ACTIONS:
        raise ValueError(f"nps {' '.join(args[:2])} starts a service or processes: run it with nps()")
    out, err = io.StringIO(), io.StringIO()
    code: list[int] = []

    def run() -> None:
        try:
            code.append(main(list(args)))
        except SystemExit as exc:  # argparse's usage errors, a command's exit
            code.append(exc.code if isinstance(exc.code, int) else 1)

    with _ENVIRON, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _logging_kept():
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            thread = threading.Thread(target=run, name="nps-here")
            thread.start()
            thread.join()
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return subprocess.CompletedProcess(["nps", *args], code[0] if code else 1, out.getvalue(), err.getvalue())


def start_service(name: str, env: dict[str, str], log: Path, port: int, timeout: float = 60) -> ServiceProcess:
    env = {**env, f"NPS_{name.upper()}_PORT": str(port)}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services", name], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    if wait_ready({name: url}, timeout, give_up=lambda: process.poll() is not None):
        process.kill()
        raise RuntimeError(f"{name} did not become ready:\n{log.read_text()[-4000:]}")
    return ServiceProcess(process, url, env, log)


def fuzz_openapi(base_url: str, headers: dict[str, str] | None = None, max_examples: int = 50) -> int:
    """Schema-driven fuzzing of a running service: valid and invalid requests generated from its own
    /openapi.json for every operation; each answer must not be a 5xx and must match the document.
    Returns the number of operations exercised (so a caller can tell it did something)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import checks
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    verify = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples(max_examples),
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def exercise(case: Any) -> None:
                case.call_and_validate(base_url=base_url, headers=headers, checks=verify)

            try:
                exercise()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise
                # nothing in this operation can be made invalid (no body, no parameters): e.g. /healthz
    return len(operations)


# --- a webhook receiver (delivery's tests) ---


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """An HTTP endpoint that records what it receives and answers as told: per path, a list of
    answers used in turn (an int status, `(status, headers)`, or "hang"), then 200."""

    port: int = field(default_factory=free_port)
    calls: list[Call] = field(default_factory=list)
    plan: dict[str, list[Any]] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)  # seconds before answering, per path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append(Call(request.path, dict(request.headers), body, time.monotonic()))
        await asyncio.sleep(self.delay.get(request.path, 0.0))
        answers = self.plan.get(request.path) or []
        answer = answers.pop(0) if answers else 200
        if answer == "hang":
            await asyncio.sleep(60)
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return web.Response(status=status, headers=headers, text="ok")


def received(receiver: Receiver, path: str, n: int) -> Callable[[], Awaitable[bool]]:
    """For `eventually`: at least n requests reached `path`."""

    async def check() -> bool:
        return len(receiver.to(path)) >= n

    return check


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A Receiver listening on 127.0.0.1 (a free port) for as long as the block runs."""
    found = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", found.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", found.port).start()
    try:
        yield found
    finally:
        await runner.cleanup()


def fired_alert(alert_id: str, segment: str, at: datetime, current_nps: float = 10.0) -> AlertFired:
    """An AlertFired of the drop rule, as alerts publishes it (numbers consistent with each other)."""
    window = {"promoters": 20, "passives": 10, "detractors": 20, "ci_low": -10.0, "ci_high": 30.0}
    return AlertFired(
        alert_id=alert_id,
        rule="drop",
        segment=segment,
        fired_at=at,
        explanation=AlertExplanation(
            summary=f"NPS of {segment} fell 20.0 points: {current_nps} (n=50) vs 30.0 (n=200), q=0.01",
            current=AlertWindowCounts(
                first_day=date(2026, 11, 20), last_day=date(2026, 11, 26), nps=current_nps, **window
            ),
            baseline=AlertWindowCounts(
                first_day=date(2026, 10, 23),
                last_day=date(2026, 11, 19),
                nps=30.0,
                **{**window, "promoters": 80, "passives": 80, "detractors": 40},
            ),
            statistic=-2.6,
            p_value=0.004,
            q_value=0.01,
            drop_points=20.0,
            contributors=[
                AlertContributor(
                    segment="product:atlas",
                    points=-15.0,
                    current_n=20,
                    baseline_n=60,
                    current_nps=-40.0,
                    baseline_nps=20.0,
                )
            ],
        ),
    )


Apply = Callable[[AsyncConnection], Awaitable[None]]


async def second_owner_retries(engine: AsyncEngine, first: Apply, second: Apply) -> None:
    """Two owners of one partition during a rebalance: `first` applies its batch in a transaction
    left open; `second`, in its own, must wait on the rows the first holds, then, once the first
    commits, roll back with RetryBatch (the loop applies its batch again, on top of the first's)."""
    async with engine.connect() as one, engine.connect() as other:
        transaction = await one.begin()
        await first(one)

        async def other_owner() -> None:
            async with other.begin():
                await second(other)

        late = asyncio.create_task(other_owner())
        await asyncio.sleep(0.5)
        assert not late.done()  # waiting on the rows the first transaction holds
        await transaction.commit()
        with pytest.raises(RetryBatch):
            await late


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return found


def signal_all(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # a backend that ended meanwhile
            os.kill(pid, sig)
    if sig == signal.SIGSTOP:
        for pid in pids:
            wait_stopped(pid)


def wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Until every thread of `pid` is stopped: kill() only asks, and a thread busy on the other core
    can still answer a request or two (a fresh clone saw a hung broker acknowledge a produce)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            states = [
                (task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in Path(f"/proc/{pid}/task").iterdir()
            ]
        except OSError:
            return  # gone, or a thread ended meanwhile: nothing left to wait for in it
        if all(state in ("T", "t", "Z", "X") for state in states):
            return
        time.sleep(0.005)
    raise AssertionError(f"pid {pid} not stopped within {timeout} s of SIGSTOP")


@contextmanager
def postgres_hung(data_dir: Path) -> Iterator[None]:
    """Every process of the PostgreSQL of `data_dir` stopped (SIGSTOP: sockets open, nothing
    answered) for the block, then continued, whatever the block raised. The postmaster first, so
    it forks no backend after its children were listed."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    stopped = [postmaster]
    signal_all(stopped, signal.SIGSTOP)
    try:
        children = children_of(postmaster)
        stopped += children
        signal_all(children, signal.SIGSTOP)
        yield
    finally:
        signal_all(stopped, signal.SIGCONT)


@contextmanager
def process_hung(pid: int) -> Iterator[None]:
    signal_all([pid], signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
