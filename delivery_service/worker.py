"""The delivery worker: claims due deliveries (leased, FOR UPDATE SKIP LOCKED), sends each signed,
at most `per_endpoint_concurrency` at once per subscription so a slow or dead endpoint holds up
only itself, and records every attempt's outcome in batches. Runs beside the consumer loop in
delivery's process; several processes can run it against one database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from sqlalchemy.ext.asyncio import AsyncEngine

from delivery_service import metrics, repository
from delivery_service.domain import (
    TEST_EVENT,
    address_allowed,
    headers_for,
    host_of,
    retry_after,
    standard_body,
    url_problem,
    verdict,
)
from delivery_service.handlers import OUTGOING
from delivery_service.settings import DeliverySettings
from delivery_service.slack import slack_body, slack_test_body
from shared.audit import record as audit
from shared.db import database_unavailable
from shared.sealed import Sealer

log = logging.getLogger(__name__)

RECORD_EVERY_S = 0.05  # outcomes are written in batches at most this far apart
STATE_EVERY_S = 5.0  # queue depth, oldest pending, subscriptions by status
PRUNE_EVERY_S = 3_600.0
GONE_KEPT_S = 30.0  # a 410's subscription is kept out this long at most, waiting for its recorded disable
MAX_ANSWER_BYTES = 64 * 1024  # read of an endpoint's answer, so the connection can be reused


class BlockedAddress(OSError):
    """A name resolved only to addresses delivery may not call."""


class VettingResolver(AbstractResolver):
    """Resolves as usual, then drops every address that is not public (unless allowed): checked at
    each new connection, so a name that later resolves to a private address (DNS rebinding) is
    refused then too."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if address_allowed(r["host"], self._allow_private)]
        if not allowed:
            raise BlockedAddress(f"{host} resolves only to addresses that are not public")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None
    error: str | None
    retry_after_s: float | None
    latency_ms: float


def client_session(settings: DeliverySettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=0, resolver=VettingResolver(settings.allow_private_urls), ttl_dns_cache=10
    )
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s, sock_connect=settings.connect_timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


async def post(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes, allow_private: bool
) -> Answer:
    """One attempt; never raises for the endpoint's sake (its failures are answers)."""
    started = time.perf_counter()
    problem = url_problem(url, allow_private)  # an address in the URL itself: the resolver is not asked
    if problem is not None:
        return Answer(None, f"refused: {problem}", None, 0.0)
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            await response.content.read(MAX_ANSWER_BYTES)
            status = response.status
            wait = retry_after(response.headers.get("Retry-After"), datetime.now(UTC)) if status in (429, 503) else None
        return Answer(status, None, wait, (time.perf_counter() - started) * 1000)
    except TimeoutError:
        return Answer(None, "timed out", None, (time.perf_counter() - started) * 1000)
    except aiohttp.ClientConnectorError as exc:
        cause = exc.os_error
        reason = (
            f"refused: {cause}"
            if isinstance(cause, BlockedAddress)
            else f"could not connect: {cause.strerror or cause}"
        )
        return Answer(None, reason, None, (time.perf_counter() - started) * 1000)
    except (aiohttp.ClientError, OSError) as exc:
        return Answer(None, f"{type(exc).__name__}: {exc}"[:300], None, (time.perf_counter() - started) * 1000)


def body_for(
    target: repository.Target, event_type: str, occurred: datetime, payload: bytes, api_url: str | None
) -> bytes:
    if target.format == "slack":
        if event_type == TEST_EVENT:
            return slack_test_body()
        return slack_body(OUTGOING.validate_json(payload), api_url)
    return standard_body(event_type, occurred, payload)


class DeliveryWorker:
    def __init__(
        self, engine: AsyncEngine, settings: DeliverySettings, sealer: Sealer, rng: random.Random | None = None
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._sealer = sealer
        self._rng = rng or random.Random()
        self._stop = asyncio.Event()
        self._targets: dict[str, repository.Target] = {}
        self._gone: dict[str, float] = {}  # subscription -> when it answered 410 (monotonic)
        # Claimed and not yet recorded, per subscription: at most `per_endpoint_concurrency` of them
        # in flight (the semaphore), the rest claimed ahead so one claim serves many attempts. How
        # many ahead is bounded so even a hanging endpoint's last one starts well inside its lease.
        self._outstanding: defaultdict[str, int] = defaultdict(int)
        self._slots: dict[str, asyncio.Semaphore] = {}
        concurrency = settings.per_endpoint_concurrency
        self._most = max(concurrency, int(concurrency * settings.lease_s / (2 * settings.timeout_s)))
        self._sending: set[asyncio.Task[None]] = set()
        self._outcomes: list[repository.Recorded] = []
        self._released: list[tuple[str, int]] = []  # claimed, not attempted: (delivery, attempt) due again
        self._freed = asyncio.Event()  # an attempt ended: its subscription has room again
        self._session: aiohttp.ClientSession | None = None
        self.failing_since: float | None = None  # the database away: for readiness

    def stop(self) -> None:
        self._stop.set()

    async def healthy(self) -> bool:
        return (
            self.failing_since is None or time.monotonic() - self.failing_since < self._settings.consumer_stuck_after_s
        )

    async def run(self) -> None:
        async with client_session(self._settings) as session:
            self._session = session
            recorder = asyncio.create_task(self._record_loop(), name="delivery-recorder")
            state = asyncio.create_task(self._state_loop(), name="delivery-state")
            try:
                await self._claim_loop()
            finally:
                for task in list(self._sending):  # attempts in flight finish (bounded by the timeout)
                    await asyncio.wait({task})
                recorder.cancel()
                state.cancel()
                await asyncio.gather(recorder, state, return_exceptions=True)
                await self._flush()  # what the last attempts said
                self._session = None

    async def _claim_loop(self) -> None:
        refreshed = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - refreshed >= self._settings.refresh_s:
                    async with self._engine.connect() as conn:
                        found = await repository.targets(conn, self._sealer)
                    # One that answered 410 stays out until the database says it is disabled (its
                    # outcome is recorded a moment later): a refresh in between brought it back,
                    # and with it more attempts at an endpoint that had said it was gone.
                    now = time.monotonic()
                    self._gone = {s: at for s, at in self._gone.items() if s in found and now - at < GONE_KEPT_S}
                    self._targets = {s: t for s, t in found.items() if s not in self._gone}
                    refreshed = time.monotonic()
                # Claim for a subscription once a quarter of its room is free (or it has nothing
                # outstanding): claims come in batches, not one per finished attempt.
                free = {
                    s: self._most - self._outstanding[s]
                    for s in self._targets
                    if self._outstanding[s] == 0 or self._most - self._outstanding[s] >= max(1, self._most // 4)
                }
                claimed: list[repository.Claimed] = []
                if free:
                    async with self._engine.begin() as conn:
                        claimed = await repository.claim(conn, free, self._settings.lease_s)
                self.failing_since = None
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                self.failing_since = self.failing_since or time.monotonic()
                log.warning("delivery: database unavailable, claiming again shortly: %s", exc)
                claimed = []
                await self._sleep(1.0)
                continue
            for item in claimed:
                self._outstanding[item.subscription_id] += 1
                task = asyncio.create_task(self._attempt(item))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
            metrics.IN_FLIGHT.set(len(self._sending))
            if not free:  # every active subscription at its limit: claim again as soon as one has room
                await self._wait_for_room()
            elif not claimed:  # nothing due
                await self._sleep(self._settings.poll_s)

    async def _wait_for_room(self) -> None:
        self._freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._freed.wait(), self._settings.poll_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _attempt(self, item: repository.Claimed) -> None:
        try:
            assert self._session is not None
            slots = self._slots.get(item.subscription_id)
            if slots is None:
                slots = self._slots[item.subscription_id] = asyncio.Semaphore(self._settings.per_endpoint_concurrency)
            async with slots:
                # Checked once it is this one's turn: a subscription paused, deleted or disabled
                # (410 from an attempt before it) meanwhile gets nothing more from this process.
                target = self._targets.get(item.subscription_id)
                if target is None or item.payload is None:
                    self._released.append((item.delivery_id, item.attempt))
                    return
                at = datetime.now(UTC)
                body = body_for(target, item.event_type, item.occurred_at, item.payload, self._settings.public_api_url)
                headers = headers_for(target.secrets, item.delivery_id, int(time.time()), body)
                answer = await post(self._session, target.url, headers, body, self._settings.allow_private_urls)
                outcome = self._outcome(item, target, at, answer)
                if outcome.gone:
                    self._targets.pop(item.subscription_id, None)
                    self._gone[item.subscription_id] = time.monotonic()
                self._outcomes.append(outcome)
        finally:
            self._outstanding[item.subscription_id] -= 1
            self._freed.set()

    def _outcome(
        self, item: repository.Claimed, target: repository.Target, at: datetime, answer: Answer
    ) -> repository.Recorded:
        decided = verdict(
            answer.status, answer.error, item.attempt, self._settings.retry_schedule_s, answer.retry_after_s, self._rng
        )
        metrics.ATTEMPTS.labels(decided.outcome).inc()
        metrics.LATENCY.observe(answer.latency_ms / 1000)
        if decided.outcome == "delivered":
            metrics.AGE_AT_DELIVERY.observe(max((datetime.now(UTC) - item.created_at).total_seconds(), 0.0))
        else:
            log.info(
                "delivery %s to %s (attempt %d): %s -> %s",
                item.delivery_id, host_of(target.url), item.attempt,
                decided.reason, decided.outcome,
            )  # fmt: skip
        status = {"delivered": "delivered", "retry": "pending"}.get(decided.outcome, "failed")
        return repository.Recorded(
            item.delivery_id, item.subscription_id, item.attempt, at, status, decided.retry_in_s,
            answer.status, decided.reason, answer.latency_ms, gone=decided.outcome == "gone",
        )  # fmt: skip

    async def _record_loop(self) -> None:
        while True:
            await asyncio.sleep(RECORD_EVERY_S)
            try:
                await self._flush()
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                log.warning("delivery: outcomes not recorded yet (database unavailable): %s", exc)

    async def _flush(self) -> None:
        if not self._outcomes and not self._released:
            return
        outcomes, self._outcomes = self._outcomes, []
        released, self._released = self._released, []
        try:
            async with self._engine.begin() as conn:
                await repository.release(conn, released)
                await repository.record(conn, outcomes)
                disabled = await repository.note_health(conn, outcomes, self._settings.disable_after_s)
                for subscription_id, reason in disabled:
                    await audit(conn, "delivery", "webhook.disabled", subscription_id, {"reason": reason})
        except Exception:
            self._outcomes[:0] = outcomes  # kept for the next flush
            self._released[:0] = released
            raise
        for subscription_id, reason in disabled:
            metrics.DISABLED.inc()
            self._targets.pop(subscription_id, None)
            log.error("webhook subscription %s disabled: %s", subscription_id, reason)

    async def _state_loop(self) -> None:
        pruned = 0.0
        while True:
            try:
                async with self._engine.begin() as conn:
                    depth, oldest = await repository.queue_state(conn)
                    statuses = await repository.status_counts(conn)
                    if time.monotonic() - pruned >= PRUNE_EVERY_S:
                        removed = await repository.prune(conn, self._settings.retention_days)
                        pruned = time.monotonic()
                        if removed:
                            log.info("delivery: %d finished deliveries past retention removed", removed)
                metrics.QUEUE_DEPTH.set(depth)
                metrics.OLDEST_PENDING.set(oldest)
                for status in ("active", "paused", "disabled"):
                    metrics.SUBSCRIPTIONS.labels(status).set(statuses.get(status, 0))
            except Exception as exc:
                if not database_unavailable(exc):
                    log.exception("delivery: queue state not read")
            await asyncio.sleep(STATE_EVERY_S)


async def send_test(
    session: aiohttp.ClientSession,
    settings: DeliverySettings,
    target: repository.Target,
    delivery_id: str,
    now: datetime,
) -> tuple[bytes, Answer]:
    """POST /v1/webhooks/{id}/test: a signed `WebhookTest` event, sent now."""
    data = b'{"subscription_id":"' + target.subscription_id.encode() + b'","message":"a test from the NPS loop"}'
    body = body_for(target, TEST_EVENT, now, data, settings.public_api_url)
    headers = headers_for(target.secrets, delivery_id, int(time.time()), body)
    return data, await post(session, target.url, headers, body, settings.allow_private_urls)
