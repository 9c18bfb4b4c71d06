"""Ingest use cases: submit one response or a batch, revise a response, erase a respondent.

A response is acknowledged only once the broker has it. Before publishing, its response_id is
recorded (with a fingerprint of the body) so that a retry is recognised, a reused id with another
body is refused, and a later revision knows the respondent (the partition key). The ports: a
ResponseStore (the database; StoreUnavailable when it is away) and a Publisher (the broker;
PublishFailed when it does not acknowledge in time).

Single submissions are handled in groups (`Ingest.run`): the requests that arrive while one group
is being recorded are recorded together with one statement, and published together as record
batches, and each request waits on one future for its outcome. At low load a group is one request;
at high load one round trip serves hundreds, and a request costs the event loop one wake-up instead
of one per step."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import msgspec

from ingest_service import domain
from ingest_service.domain import InvalidResponse, Limits, ReviseResponse, Submission, SubmitResponse
from ingest_service.publisher import Publisher, PublishFailed
from ingest_service.repository import Revision, StoreUnavailable
from shared.deadline import Deadline, DeadlineExceeded
from shared.events import Identity, RespondentErased, ResponseRevised
from shared.logs import current_request_id
from shared.pseudonyms import Pseudonyms
from shared.validation import FieldProblem

log = logging.getLogger(__name__)

CONFLICT_PROBLEM = "this response_id was already used with a different body; use PUT to revise a response"


class Conflict(Exception):
    """The response_id was first used with another body."""


class NotFound(Exception):
    pass


class OutcomeUnknown(Exception):
    """The broker did not acknowledge in time (`where` "broker": the event may still reach it, the
    producer keeps trying, or not), or the database did not answer the statement recording it in
    time (`where` "database": it may have been recorded, or not). A retry with `response_id`
    counts once whichever happened."""

    def __init__(self, response_id: str, where: Literal["broker", "database"] = "broker") -> None:
        super().__init__(response_id)
        self.response_id = response_id
        self.where = where


class BatchOutcomeUnknown(Exception):
    """The database did not answer the statement recording a batch in time: each item may have
    been recorded, or not. Sent again as it was, an item with a response_id counts once."""


class ResponseStore(Protocol):
    async def record_all(self, items: Sequence[Submission]) -> dict[str, str]: ...
    async def record_group(self, items: Sequence[Submission]) -> dict[str, str]: ...
    async def next_revision(self, response_id: str) -> Revision | None: ...
    async def log_revision(self, respondent_id: str, event: bytes) -> None: ...
    async def forget_respondent(
        self, respondent_id: str, erasure_id: str, actor: str, event: bytes, respondent_key: str | None = None
    ) -> int: ...


# One per batch item (0.1 us to build); the answer encodes them as they are: the fields are
# BatchItem's (ingest_service/api.py), in its order.
class ItemResult(msgspec.Struct, frozen=True, gc=False):
    index: int
    status: Literal["accepted", "rejected", "conflict", "unavailable"]
    response_id: str | None = None
    errors: tuple[FieldProblem, ...] = ()


# A grouped submission's outcome, besides an exception (StoreUnavailable).
ACCEPTED, CONFLICT, UNACKNOWLEDGED, UNRECORDED = "accepted", "conflict", "unacknowledged", "unrecorded"
# The item, its request's id, its outcome, and when it arrived (the event loop's clock).
Waiting = tuple[Submission, str | None, "asyncio.Future[str]", float]


class FirstUses:
    """The items of one statement, each response_id once (the first item that carries it), and
    which items conflict once the statement has said what was already recorded: an item conflicts
    when its body differs from the one its id was first recorded with, or, for a first use, from
    the first item with its id here."""

    def __init__(self, items: Iterable[Submission]) -> None:
        self.first: dict[str, Submission] = {}
        for item in items:
            self.first.setdefault(item.response_id, item)

    def conflicts(self, item: Submission, existing: Mapping[str, str]) -> bool:
        return existing.get(item.response_id, self.first[item.response_id].fingerprint) != item.fingerprint


def fail(group: list[Waiting], exc: Exception) -> None:
    for _, _, outcome, _ in group:
        if not outcome.done():
            outcome.set_exception(exc)


def settle(group: list[Waiting], result: str) -> None:
    for _, _, outcome, _ in group:
        if not outcome.done():  # done: the request went away (its client hung up)
            outcome.set_result(result)


@dataclass
class Ingest:
    publisher: Publisher
    store: ResponseStore
    topic: str
    limits: Limits
    # A request is answered within the larger of the database's and the broker's timeouts (and
    # the time it takes to answer): its recording must be done within `db_timeout_s` of its arrival,
    # the broker's acknowledgement within `publisher.timeout_s` of the recording and that bound.
    db_timeout_s: float = 2.0
    max_group: int = 2_000
    invitations_topic: str | None = None  # nps.invitations.v1: an erasure goes there too
    pseudonyms: Pseudonyms | None = None  # an erasure is remembered by the person's keyed pseudonym
    _waiting: list[Waiting] = field(default_factory=list, init=False, repr=False)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    # Recorded groups waiting for the broker, each with the time its wait ends; and the task that
    # publishes them, all that waited in one call, while the next groups are being recorded.
    _outgoing: list[tuple[list[Waiting], float]] = field(default_factory=list, init=False, repr=False)
    _sending: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def validate(self, command: SubmitResponse, now: datetime) -> None:
        domain.check(command, now, self.limits)

    async def submit(
        self, command: SubmitResponse, now: datetime, source: str, identity: Identity = "server"
    ) -> Submission:
        """Record and publish one response with the others in flight (`run` must be running). A
        retry (same body) is published again: the first attempt may never have reached the broker,
        and consumers keep one response per response_id whatever they receive."""
        domain.check(command, now, self.limits)
        item = domain.submission(command, now, source, identity)
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[str] = loop.create_future()
        self._waiting.append((item, current_request_id(), outcome, loop.time()))
        self._wakeup.set()
        result = await outcome
        if result == CONFLICT:
            raise Conflict(item.response_id)
        if result == UNACKNOWLEDGED:
            raise OutcomeUnknown(item.response_id)
        if result == UNRECORDED:
            raise OutcomeUnknown(item.response_id, "database")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("response published", extra={"response_id": item.response_id})
        return item

    async def run(self) -> None:
        """The worker behind `submit`, for the life of the process: records each group while the
        ones before are with the broker, so the database and the broker work at once."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                group, self._waiting = self._waiting[: self.max_group], self._waiting[self.max_group :]
                await self._record(group)

    @property
    def budget_s(self) -> float:
        """The longest a submission waits for its answer (besides the time to send it)."""
        return max(self.db_timeout_s, self.publisher.timeout_s)

    async def _record(self, group: list[Waiting]) -> None:
        loop = asyncio.get_running_loop()
        arrived = group[0][3]  # the group's first: the others came after it
        recorded_by = arrived + self.db_timeout_s
        if loop.time() >= recorded_by:  # it waited out its time behind a group the database did not answer
            fail(group, StoreUnavailable("no time left to record"))
            return
        uses = FirstUses(item for item, _, _, _ in group)
        try:
            async with Deadline(self.db_timeout_s, "recording responses", at=recorded_by):
                existing = await self.store.record_group(list(uses.first.values()))
        except DeadlineExceeded:
            settle(group, UNRECORDED)  # the statement was sent: it may or may not have been applied
            return
        except Exception as exc:  # StoreUnavailable, or a bug: each request answers for it
            fail(group, exc)
            return
        publish: list[Waiting] = []
        for waiting in group:
            item, _, outcome, _ = waiting
            if uses.conflicts(item, existing):
                if not outcome.done():
                    outcome.set_result(CONFLICT)
            else:
                publish.append(waiting)
        if publish:
            acked_by = min(loop.time() + self.publisher.timeout_s, arrived + self.budget_s)
            self._outgoing.append((publish, acked_by))
            if self._sending is None or self._sending.done():
                self._sending = asyncio.create_task(self._send())

    async def _send(self) -> None:
        """Publish what was recorded, as few calls as the broker's pace allows: groups recorded
        while a call is out wait for it and go together in the next (a few large record batches
        instead of one per group and partition). Each call waits no longer than the earliest of
        its groups may (`Publisher.timeout_s` from its recording)."""
        loop = asyncio.get_running_loop()
        while self._outgoing:
            taken, self._outgoing = self._outgoing, []
            group = [waiting for part, _ in taken for waiting in part]
            timeout = max(0.0, min(acked_by for _, acked_by in taken) - loop.time())
            try:
                acked = await self.publisher.publish_many(
                    self.topic,
                    [(item.key, item.event) for item, _, _, _ in group],
                    [request_id for _, request_id, _, _ in group],
                    timeout,
                )
                for (_, _, outcome, _), ok in zip(group, acked, strict=True):
                    if not outcome.done():  # done: the request went away (its client hung up)
                        outcome.set_result(ACCEPTED if ok else UNACKNOWLEDGED)
            except Exception as exc:  # a bug: each request still waiting answers for it
                fail(group, exc)

    async def submit_batch(self, items: Sequence[Any], now: datetime, source: str) -> list[ItemResult]:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        results: dict[int, ItemResult] = {}
        valid: list[tuple[int, Submission]] = []
        for index, raw in enumerate(items):
            try:
                valid.append((index, domain.submission(domain.check_item(raw, now, self.limits), now, source)))
            except InvalidResponse as exc:
                results[index] = ItemResult(index, "rejected", errors=exc.problems)

        uses = FirstUses(item for _, item in valid)
        try:
            async with Deadline(self.db_timeout_s, "recording a batch"):
                existing = await self.store.record_all(list(uses.first.values()))
        except DeadlineExceeded as exc:
            raise BatchOutcomeUnknown from exc

        to_publish: list[tuple[int, Submission]] = []
        for index, item in valid:
            if uses.conflicts(item, existing):
                problem = FieldProblem(field="response_id", problem=CONFLICT_PROBLEM)
                results[index] = ItemResult(index, "conflict", item.response_id, (problem,))
            else:
                to_publish.append((index, item))
        timeout = max(0.0, min(loop.time() + self.publisher.timeout_s, arrived + self.budget_s) - loop.time())
        acked = await self.publisher.publish_many(
            self.topic, [(item.key, item.event) for _, item in to_publish], timeout_s=timeout
        )
        debug = log.isEnabledFor(logging.DEBUG)
        for (index, item), ok in zip(to_publish, acked, strict=True):
            results[index] = ItemResult(index, "accepted" if ok else "unavailable", item.response_id)
            if debug:
                log.debug("batch item %d %s", index, results[index].status, extra={"response_id": item.response_id})
        return [results[i] for i in range(len(items))]

    async def revise(self, response_id: str, command: ReviseResponse, now: datetime, source: str) -> ResponseRevised:
        domain.check_attributes(command.attributes)
        revision = await self.store.next_revision(response_id)
        if revision is None:
            raise NotFound(response_id)
        event = ResponseRevised(
            response_id=response_id,
            respondent_id=revision.respondent_id,
            version=revision.version,
            score=command.score,
            comment=command.comment,
            survey_id=revision.survey_id,
            channel=revision.channel,
            answered_at=revision.answered_at,
            attributes=command.attributes,
            revised_at=now,
            source=source,
        )
        payload = event.to_bytes()
        await self.store.log_revision(event.respondent_id, payload)
        await self.publisher.publish(self.topic, key=event.respondent_id.encode(), value=payload)
        log.debug("revision %d published", event.version, extra={"response_id": response_id})
        return event

    async def erase(self, respondent_id: str, now: datetime, source: str) -> RespondentErased:
        event = RespondentErased(
            erasure_id=domain.new_id(), respondent_id=respondent_id, requested_at=now, source=source
        )
        # Published first: if forgetting our own rows then fails, the client retries the whole
        # erasure (publishing it again is harmless: erasing twice erases the same data).
        payload = event.to_bytes()
        await self.publisher.publish(self.topic, key=respondent_id.encode(), value=payload)
        if self.invitations_topic is not None:  # their invitations' topic forgets them too
            await self.publisher.publish(self.invitations_topic, key=respondent_id.encode(), value=payload)
        key = self.pseudonyms.key(respondent_id) if self.pseudonyms is not None else None
        await self.store.forget_respondent(respondent_id, event.erasure_id, source, payload, key)
        return event


__all__ = [
    "BatchOutcomeUnknown",
    "Conflict",
    "Ingest",
    "ItemResult",
    "NotFound",
    "OutcomeUnknown",
    "PublishFailed",
    "StoreUnavailable",
]
