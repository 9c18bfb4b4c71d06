"""Response rates: which invitations were answered. Pure: the rule the database applies per person
(repository.py), and the from-scratch recompute the tests hold it equal to.

An invitation is answered when a response answers it. A response answers the invitation it names
(`invitation_id`, if that invitation is the same person's), or else the person's latest invitation
to the same survey sent at or before the answer and at most the match window before it (ties: the
greatest invitation_id). The rule looks only at what is stored, never at the order it arrived in:
an invitation that arrives after the response it was answered by is matched all the same."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from shared.nps import Rate

FATIGUE_DAYS = 30  # survey fatigue: the share of people asked twice or more in these many days


@dataclass(frozen=True, slots=True)
class Invited:
    invitation_id: str
    respondent_key: str
    survey_id: str  # "" for none: a response without a survey answers an invitation without one
    invited_at: datetime
    day: date
    segments: tuple[str, ...]
    accepted_at: datetime  # when ingest took it (the event's recorded_at)


@dataclass(frozen=True, slots=True)
class Answer:
    response_id: str
    respondent_key: str
    survey_id: str
    answered_at: datetime
    invitation_id: str | None
    accepted_at: datetime  # submitted_at


def answered(invitations: Iterable[Invited], answers: Iterable[Answer], window: timedelta) -> set[str]:
    """The invitation_ids some answer answers."""
    mine: dict[str, list[Invited]] = defaultdict(list)
    for invitation in invitations:
        mine[invitation.respondent_key].append(invitation)
    found = set()
    for answer in answers:
        theirs = mine.get(answer.respondent_key, [])
        named = [i for i in theirs if answer.invitation_id is not None and i.invitation_id == answer.invitation_id]
        if named:
            found.add(named[0].invitation_id)
            continue
        before = [
            i
            for i in theirs
            if i.survey_id == answer.survey_id and answer.answered_at - window <= i.invited_at <= answer.answered_at
        ]
        if before:
            found.add(max(before, key=lambda i: (i.invited_at, i.invitation_id)).invitation_id)
    return found


def recompute(
    invitations: Iterable[Invited], answers: Iterable[Answer], window: timedelta
) -> dict[tuple[str, date], Rate]:
    """Per (segment, day of the invitation): how many were invited, how many of them answered."""
    invitations = list(invitations)
    hit = answered(invitations, answers, window)
    counts: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0])
    for invitation in invitations:
        for segment in invitation.segments:
            pair = counts[(segment, invitation.day)]
            pair[0] += 1
            pair[1] += invitation.invitation_id in hit
    return {k: Rate(*v) for k, v in counts.items() if v[0]}


def summed(days: Mapping[date, Rate]) -> Rate:
    return sum(days.values(), Rate(0, 0))
