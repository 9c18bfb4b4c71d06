"""Ingest use cases: submit one response or a batch, revise a response, erase a respondent.

A response is acknowledged only once the broker has it. Before publishing, its response_id is
recorded (with a fingerprint of the body) so that a retry is recognised, a reused id with another
body is refused, and a later revision knows the respondent (the partition key)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import pydantic_core
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_service import domain, repository
from ingest_service.domain import InvalidResponse, Limits, ReviseResponse, SubmitResponse
from ingest_service.publisher import Publisher, PublishFailed
from ingest_service.repository import ResponseRecord
from shared.consumer import is_transient
from shared.events import RespondentErased, ResponseRevised
from shared.http import FieldProblem, field_name


class Conflict(Exception):
    """The response_id was first used with another body."""


class NotFound(Exception):
    pass


class StoreUnavailable(Exception):
    """The database did not answer: nothing was promised, the client should retry."""


class Recorder(Protocol):
    async def record(self, item: ResponseRecord) -> str | None: ...


items_adapter: TypeAdapter[SubmitResponse] = TypeAdapter(SubmitResponse)


@dataclass(frozen=True, slots=True)
class ItemResult:
    index: int
    status: Literal["accepted", "rejected", "conflict", "unavailable"]
    response_id: str | None = None
    errors: tuple[FieldProblem, ...] = ()


@dataclass(frozen=True, slots=True)
class Encoded:
    """A ResponseSubmitted as ingest publishes it: its JSON, and what the handlers need of it."""

    response_id: str
    respondent_id: str
    channel: str | None
    survey_id: str | None
    answered_at: datetime
    value: bytes


def encode_submitted(command: SubmitResponse, response_id: str, now: datetime, source: str) -> Encoded:
    """The same JSON as the ResponseSubmitted model's (a unit test holds them byte-for-byte equal),
    without building and serializing a model: a quarter of the per-item cost of a batch."""
    answered_at = command.answered_at or now
    value = pydantic_core.to_json(
        {
            "schema_version": 1,
            "type": "ResponseSubmitted",
            "response_id": response_id,
            "respondent_id": command.respondent_id,
            "score": command.score,
            "comment": command.comment,
            "survey_id": command.survey_id,
            "channel": command.channel,
            "answered_at": answered_at,
            "attributes": command.attributes,
            "email": command.email,
            "submitted_at": now,
            "source": source,
        }
    )
    return Encoded(response_id, command.respondent_id, command.channel, command.survey_id, answered_at, value)


def to_record(event: Encoded, fingerprint: str) -> ResponseRecord:
    return ResponseRecord(
        response_id=event.response_id,
        respondent_id=event.respondent_id,
        fingerprint=fingerprint,
        channel=event.channel,
        survey_id=event.survey_id,
        answered_at=event.answered_at,
    )


@dataclass
class Ingest:
    publisher: Publisher
    recorder: Recorder
    engine: AsyncEngine
    topic: str
    limits: Limits

    def validate(self, command: SubmitResponse, now: datetime) -> None:
        domain.check(command, now, self.limits)

    async def submit(self, command: SubmitResponse, now: datetime, source: str) -> Encoded:
        domain.check(command, now, self.limits)
        fingerprint = domain.fingerprint(command)
        event = encode_submitted(command, command.response_id or domain.new_id(), now, source)
        try:
            existing = await self.recorder.record(to_record(event, fingerprint))
        except Exception as exc:
            unavailable_if_transient(exc)
            raise
        if existing is not None and existing != fingerprint:
            raise Conflict(event.response_id)
        # A retry (same body) is published again: the first attempt may never have reached the
        # broker, and consumers keep one response per response_id whatever they receive.
        await self.publisher.publish(self.topic, key=event.respondent_id.encode(), value=event.value)
        return event

    async def submit_batch(self, items: Sequence[Any], now: datetime, source: str) -> list[ItemResult]:
        results: dict[int, ItemResult] = {}
        valid: list[tuple[int, Encoded, str]] = []
        for index, raw in enumerate(items):
            try:
                command = items_adapter.validate_python(raw)
                domain.check(command, now, self.limits)
            except ValidationError as exc:
                problems = tuple(
                    FieldProblem(field=field_name(tuple(e["loc"])) or "item", problem=e["msg"])
                    for e in exc.errors(include_input=False)
                )
                results[index] = ItemResult(index, "rejected", errors=problems)
                continue
            except InvalidResponse as exc:
                results[index] = ItemResult(
                    index, "rejected", errors=(FieldProblem(field=exc.field, problem=exc.problem),)
                )
                continue
            valid.append(
                (
                    index,
                    encode_submitted(command, command.response_id or domain.new_id(), now, source),
                    domain.fingerprint(command),
                )
            )

        first: dict[str, tuple[Encoded, str]] = {}
        for _, event, fp in valid:
            first.setdefault(event.response_id, (event, fp))
        try:
            async with self.engine.begin() as conn:
                existing = await repository.record(conn, [to_record(e, fp) for e, fp in first.values()])
        except Exception as exc:
            unavailable_if_transient(exc)
            raise

        to_publish: list[tuple[int, Encoded]] = []
        for index, event, fp in valid:
            recorded = existing.get(event.response_id, first[event.response_id][1])
            if recorded != fp:
                results[index] = ItemResult(
                    index, "conflict", event.response_id, (FieldProblem(field="response_id", problem=CONFLICT_PROBLEM),)
                )
            else:
                to_publish.append((index, event))
        acked = await self.publisher.publish_many(
            self.topic, [(e.respondent_id.encode(), e.value) for _, e in to_publish]
        )
        for (index, event), ok in zip(to_publish, acked, strict=True):
            results[index] = ItemResult(index, "accepted" if ok else "unavailable", event.response_id)
        return [results[i] for i in range(len(items))]

    async def revise(self, response_id: str, command: ReviseResponse, now: datetime, source: str) -> ResponseRevised:
        domain.check_attributes(command.attributes)
        try:
            async with self.engine.begin() as conn:
                revision = await repository.next_revision(conn, response_id)
        except Exception as exc:
            unavailable_if_transient(exc)
            raise
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
        await self.publisher.publish(self.topic, key=event.respondent_id.encode(), value=event.to_bytes())
        return event

    async def erase(self, respondent_id: str, now: datetime, source: str) -> RespondentErased:
        event = RespondentErased(
            erasure_id=domain.new_id(), respondent_id=respondent_id, requested_at=now, source=source
        )
        # Published first: if forgetting our own rows then fails, the client retries the whole
        # erasure (publishing it again is harmless: erasing twice erases the same data).
        await self.publisher.publish(self.topic, key=respondent_id.encode(), value=event.to_bytes())
        try:
            async with self.engine.begin() as conn:
                await repository.forget_respondent(conn, respondent_id)
        except Exception as exc:
            unavailable_if_transient(exc)
            raise
        return event


CONFLICT_PROBLEM = "this response_id was already used with a different body; use PUT to revise a response"


def unavailable_if_transient(exc: Exception) -> None:
    """A database that is away becomes a 503 for the client; anything else is a bug and propagates."""
    if is_transient(exc):
        raise StoreUnavailable(type(exc).__name__) from exc


__all__ = ["Conflict", "Ingest", "ItemResult", "NotFound", "PublishFailed", "StoreUnavailable"]
