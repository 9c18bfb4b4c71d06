"""Delivery's consumer: each event on the follow-ups, tickets and alerts topics becomes one queued
delivery per subscription that wants it, in the batch's transaction (offsets are committed after
it, so nothing consumed is lost and a redelivered event queues nothing twice). Erasures, read from
the responses topic, cancel what names the person and drop their payloads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_service import metrics, repository
from delivery_service.domain import Outgoing, event_key, occurred_at, order_key, respondent_of, wants, webhook_id
from shared.consumer import Message
from shared.events import (
    RespondentErased,
)
from shared.pseudonyms import Pseudonyms

OUTGOING: TypeAdapter[Outgoing] = TypeAdapter(Annotated[Outgoing, Field(discriminator="type")])


class _Response(BaseModel):
    """A response on the responses topic, read for its type only: delivery is after its erasures."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["ResponseSubmitted", "ResponseRevised"]


# One pass over each message's JSON: the type picks the model, and a response is not built at all.
_CONSUMED: TypeAdapter[Outgoing | RespondentErased | _Response] = TypeAdapter(
    Annotated[Outgoing | RespondentErased | _Response, Field(discriminator="type")]
)


class Incoming(NamedTuple):
    """A consumed event (None: a response, not delivery's business) and its bytes as on the topic."""

    event: Outgoing | RespondentErased | None
    raw: bytes


def decode(raw: bytes) -> Incoming:
    event = _CONSUMED.validate_json(raw)
    return Incoming(None if isinstance(event, _Response) else event, raw)


@dataclass(frozen=True, slots=True)
class QueueDeliveries:
    pseudonyms: Pseudonyms
    clock: Callable[[], datetime]

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[Incoming]]) -> None:
        now = self.clock()
        requested = self.pseudonyms.latest_requests(m.event.event for m in batch)
        erased = await repository.ERASURES.record(conn, requested)
        if requested:
            await repository.forget(conn, requested, now)
        outgoing = [
            m.event for m in batch if m.event.event is not None and not isinstance(m.event.event, RespondentErased)
        ]
        if not outgoing:
            return
        receiving = await repository.receiving(conn)
        if not receiving:
            return
        keys: dict[int, str] = {}
        for i, item in enumerate(outgoing):
            respondent = respondent_of(item.event)  # type: ignore[arg-type]
            if respondent is not None:
                keys[i] = self.pseudonyms.key(respondent)
        erased.update(await repository.ERASURES.of(conn, set(keys.values()) - erased.keys()))
        rows: list[tuple[object, ...]] = []
        for i, item in enumerate(outgoing):
            event: Outgoing = item.event  # type: ignore[assignment]
            key = keys.get(i)
            at = occurred_at(event)
            if key is not None and key in erased and at <= erased[key]:
                metrics.SKIPPED_ERASED.inc()
                continue
            identity = event_key(item.raw)
            for subscription in receiving:
                if wants(subscription, event):
                    rows.append(
                        (
                            webhook_id(subscription.subscription_id, identity), subscription.subscription_id,
                            event.type, f"{subscription.subscription_id}/{order_key(event)}", key, at, item.raw, "pending", now, now,
                        )
                    )  # fmt: skip
        for event_type, n in Counter(await repository.enqueue(conn, rows)).items():
            metrics.QUEUED.labels(event_type).inc(n)
