"""The response-rate consumer: invitations (nps.invitations.v1) and responses (nps.responses.v1),
read by one consumer group of their own, counted into `rate_daily` by the day and segments of each
invitation. Its own group, so response rates never slow the scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from scoring_service import metrics, repository
from scoring_service.domain import Dimensions, SegmentPlan, Version, candidate_values, segments_of
from scoring_service.rates import repository as rates
from scoring_service.rates.domain import Answer, Invited
from shared.consumer import Message
from shared.privacy import Erasures
from shared.pseudonyms import Pseudonyms
from shared.windows import utc_day
from shared.wire import Invited as InvitedWire
from shared.wire import RateWire, Submitted

ERASURES = Erasures(repository.SCHEMA)


@dataclass(frozen=True, slots=True)
class CountRates:
    dimensions: Dimensions
    max_values: int
    pseudonyms: Pseudonyms
    match_window: timedelta

    def _invited(self, event: InvitedWire, key: str) -> Version:
        """The invitation as a response-shaped row, for the segment rules responses are counted by."""
        return Version(
            response_id=event.invitation_id,
            respondent_key=key,
            version=1,
            score=0,
            day=utc_day(event.invited_at),
            channel=event.channel,
            survey_id=event.survey_id,
            attributes=event.attributes,
            at=event.recorded_at,
            comment=None,
        )

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[RateWire]]) -> None:
        key = self.pseudonyms.key
        requested = self.pseudonyms.latest_requests(m.event for m in batch)
        sent: list[tuple[InvitedWire, str]] = []
        answered: dict[str, tuple[Submitted, str]] = {}
        for message in batch:
            event = message.event
            if isinstance(event, InvitedWire):
                sent.append((event, key(event.respondent_id)))
            elif isinstance(event, Submitted):
                answered.setdefault(event.response_id, (event, key(event.respondent_id)))
        people = {k for _, k in sent} | {k for _, k in answered.values()} | set(requested)
        await rates.lock_people(conn, people)
        erasures = await ERASURES.record(conn, requested)
        erasures.update(await ERASURES.of(conn, people - erasures.keys()))

        def stays(k: str, taken: datetime) -> bool:
            """An erasure covers what ingest took before it, whenever that arrives."""
            return k not in erasures or taken > erasures[k]

        # The copies of an invitation (a prompt's shown and dismissed, redeliveries) count the same;
        # it stays while any copy taken after the person's erasure does: the latest copy is kept.
        latest: dict[str, tuple[InvitedWire, str]] = {}
        for event, k in sent:
            if stays(k, event.recorded_at):
                kept = latest.get(event.invitation_id)
                if kept is None or kept[0].recorded_at < event.recorded_at:
                    latest[event.invitation_id] = (event, k)
        invitations = list(latest.values())
        answers = [(e, k) for e, k in answered.values() if stays(k, e.submitted_at)]

        versions = [self._invited(e, k) for e, k in invitations]
        known, per_dimension = await repository.known_segments(
            conn, candidate_values(versions, self.dimensions), repository.SCHEMA
        )
        plan = SegmentPlan(known, per_dimension, self.max_values)
        rows = [
            Invited(v.response_id, v.respondent_key, v.survey_id or "", e.invited_at, v.day,
                    segments_of(v, self.dimensions, plan), e.recorded_at)
            for v, (e, _) in zip(versions, invitations, strict=True)
        ]  # fmt: skip
        await repository.catalog_segments(conn, {s for r in rows for s in r.segments}, repository.SCHEMA)

        deltas = rates.new_deltas()
        await rates.forget(conn, {k: erasures[k] for k in requested}, deltas)
        new_invitations = await rates.store_invitations(conn, rows, deltas)
        # Everything of the erased people, and of those whose earlier answers may now pick a new
        # invitation (asked before the batch's answers are stored: those pick below), is matched
        # again; other people's new answers only add their picks.
        again = set(requested) | await rates.may_be_picked(conn, new_invitations, self.match_window)
        new_answers = await rates.store_answers(
            conn,
            [
                Answer(e.response_id, k, e.survey_id or "", e.answered_at, e.invitation_id, e.submitted_at)
                for e, k in answers
            ],
        )
        await rates.rematch(conn, again, self.match_window, deltas)
        await rates.pick(conn, [a for a in new_answers if a.respondent_key not in again], self.match_window, deltas)
        await rates.add_daily(conn, deltas)
        # Their ScoreChanged goes out again with the rates (alerts' response_rate rule reads them).
        await repository.mark_changed(conn, {s for (s, _), v in deltas.items() if v != [0, 0]}, "rate_state")
        metrics.INVITATIONS.inc(len(rows))
