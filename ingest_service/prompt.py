"""Should this person see the prompt now? (`GET /v1/prompt`, served by ingest so that a widget has
one address for all it calls.) Decided from what ingest holds itself: the person's last answer
(`ingest.responses`) and last invitation or prompt shown (`ingest.invitations`), the erasures it was
asked for, and follow-up's opt-outs, mirrored from nps.contact.v1 by a small consumer of its own
(`ingest.contact`). Then sampling: a stable share of people per period, by a keyed hash of the
person and the period, so one person is not in on one page and out on the next.

Who may ask: a publishable key, for a person whose identity the app's server vouched for (the same
check as a response: nobody learns anything about a person they could not already post for), or a
secret key with `contact:read`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest_service.domain import Channel, Identifier, RespondentHash, SurveyId
from shared.consumer import Message
from shared.db import HeldConnection, database_unavailable, fetch_alone
from shared.deadline import Deadline
from shared.events import ContactChanged
from shared.pseudonyms import Pseudonyms

log = logging.getLogger(__name__)

SCHEMA = "ingest"
Reason = Literal["opted_out", "erased", "surveyed_recently", "asked_recently", "not_sampled"]
EPOCH = date(1970, 1, 1)


class PromptQuery(BaseModel):
    """GET /v1/prompt's query parameters."""

    model_config = ConfigDict(extra="forbid")

    respondent_id: Identifier
    survey_id: SurveyId = None
    channel: Channel = None
    respondent_hash: RespondentHash = Field(
        default=None, description="With a publishable key: as on POST /v1/responses."
    )


class PromptAnswer(BaseModel):
    show: bool
    reason: Reason | None = Field(description="why not (the first that applies); null when show is true")
    next_at: datetime | None = Field(
        description="from when the answer may be yes (null: now, or not foreseeable: opted out, erased)"
    )


@dataclass(frozen=True, slots=True)
class Facts:
    """What ingest holds about one person, for the prompt."""

    last_answer: datetime | None = None
    last_asked: datetime | None = None
    opted_out: bool = False
    erased: bool = False


@dataclass(frozen=True, slots=True)
class PromptRules:
    survey_gap: timedelta  # after an answer
    asked_gap: timedelta  # after an invitation or a prompt shown
    period_days: int  # a sample's period
    samples: Mapping[str, float]  # per survey id


def period_of(day: date, period_days: int) -> int:
    return (day - EPOCH).days // period_days


def sampled(respondent_key: str, share: float, period: int) -> bool:
    """Whether the person is in a `share` sample in this period: the keyed pseudonym (which nobody
    outside can compute) and the period, hashed to a number in [0, 1)."""
    if share >= 1:
        return True
    digest = hashlib.sha256(f"{respondent_key}\x1f{period}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def decide(facts: Facts, now: datetime, rules: PromptRules, respondent_key: str, share: float) -> PromptAnswer:
    """Pure: the answer for this person now."""
    if facts.opted_out:
        return PromptAnswer(show=False, reason="opted_out", next_at=None)
    if facts.erased:
        return PromptAnswer(show=False, reason="erased", next_at=None)
    if facts.last_answer is not None and facts.last_answer + rules.survey_gap > now:
        return PromptAnswer(show=False, reason="surveyed_recently", next_at=facts.last_answer + rules.survey_gap)
    if facts.last_asked is not None and facts.last_asked + rules.asked_gap > now:
        return PromptAnswer(show=False, reason="asked_recently", next_at=facts.last_asked + rules.asked_gap)
    period = period_of(now.astimezone(UTC).date(), rules.period_days)
    if not sampled(respondent_key, share, period):
        starts = EPOCH + timedelta(days=(period + 1) * rules.period_days)
        return PromptAnswer(
            show=False, reason="not_sampled", next_at=datetime(starts.year, starts.month, starts.day, tzinfo=UTC)
        )
    return PromptAnswer(show=True, reason=None, next_at=None)


# Every waiting request's person at once: one statement, one round trip, on a connection kept for
# it (a pool checkout per request cost ~1.4 ms of this process's CPU, the statement ~0.2).
_FACTS = f"""
    SELECT (SELECT max(answered_at) FROM {SCHEMA}.responses r WHERE r.respondent_id = q.id),
           (SELECT max(invited_at) FROM {SCHEMA}.invitations v WHERE v.respondent_id = q.id),
           coalesce((SELECT opted_out FROM {SCHEMA}.contact c WHERE c.respondent_key = q.k), false),
           EXISTS (SELECT 1 FROM {SCHEMA}.erasures e WHERE e.respondent_key = q.k)
    FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q(id, k, n)
    ORDER BY q.n
"""
MAX_GROUP = 1_000


class PromptUnavailable(Exception):
    """The database did not answer the prompt's read in time."""


class PromptReader:
    """Reads the facts of every prompt request waiting, as one statement, while the next ones
    gather: at 2,000 prompts a second that is a few dozen statements, not 2,000 checkouts. A read
    the database does not answer within `timeout_s` fails its requests (503) and its connection is
    closed (shared/deadline.py); the next group opens another."""

    def __init__(self, engine: AsyncEngine, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._waiting: list[tuple[str, str, asyncio.Future[Facts]]] = []
        self._wakeup = asyncio.Event()
        self._held = HeldConnection(engine)

    async def facts(self, respondent_id: str, respondent_key: str) -> Facts:
        outcome: asyncio.Future[Facts] = asyncio.get_running_loop().create_future()
        self._waiting.append((respondent_id, respondent_key, outcome))
        self._wakeup.set()
        return await outcome

    async def run(self) -> None:
        """For the life of the process (ingest's lifespan runs it)."""
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._waiting:
                    group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                    await self._read(group)
        finally:
            await self._held.drop()

    async def _read(self, group: list[tuple[str, str, asyncio.Future[Facts]]]) -> None:
        try:
            async with Deadline(self.timeout_s, "the prompt's read"):
                driver = await self._held.driver()
                rows = await fetch_alone(driver, _FACTS, [g[0] for g in group], [g[1] for g in group])
        except Exception as exc:
            await self._held.drop()
            failure = PromptUnavailable(type(exc).__name__)
            for _, _, outcome in group:
                if not outcome.done():
                    outcome.set_exception(failure)
            if not (database_unavailable(exc) or isinstance(exc, TimeoutError)):
                log.error("the prompt's read failed", exc_info=exc)
            return
        for (_, _, outcome), row in zip(group, rows, strict=True):
            if not outcome.done():  # done: its client went away
                outcome.set_result(Facts(row[0], row[1], bool(row[2]), bool(row[3])))


@dataclass(frozen=True, slots=True)
class MirrorContact:
    """The batch handler of nps.contact.v1: each person's latest preference (by changed_at, so the
    order of delivery does not matter)."""

    pseudonyms: Pseudonyms

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[ContactChanged]]) -> None:
        latest: dict[str, ContactChanged] = {}
        for message in batch:
            key = self.pseudonyms.key(message.event.respondent_id)
            if key not in latest or latest[key].changed_at < message.event.changed_at:
                latest[key] = message.event
        keys = sorted(latest)
        if not keys:
            return
        await conn.execute(
            sa.text(
                f"""INSERT INTO {SCHEMA}.contact AS c (respondent_key, opted_out, changed_at)
                    SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:outs AS boolean[]), CAST(:ats AS timestamptz[]))
                    ON CONFLICT (respondent_key) DO UPDATE SET
                        opted_out = EXCLUDED.opted_out, changed_at = EXCLUDED.changed_at
                    WHERE c.changed_at < EXCLUDED.changed_at"""
            ),
            {"keys": keys, "outs": [latest[k].opted_out for k in keys], "ats": [latest[k].changed_at for k in keys]},
        )
