"""Random histories of response events, and the from-scratch recompute every scoring aggregate must
equal. Shared by the pure property test (tests/unit) and the one through the real consumer loop,
broker and PostgreSQL (tests/integration). The recompute is written independently of
scoring_service.domain.apply: it never looks at delivery order."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol, TypeVar

from hypothesis import strategies as st

from shared.events import RespondentErased, ResponseEvent, ResponseRevised, ResponseSubmitted
from shared.nps import Counts

START = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CHANNELS = [None, "web", "email"]
PRODUCTS = [None, "atlas", "zephyr"]
REGIONS = [None, "eu", "us"]
# Comments for the themes consumer (scoring ignores them): none, blank, one theme, two, a negated one.
COMMENTS = [None, None, "  ", "Delivery took weeks", "Too expensive and support never answered", "not slow at all"]


def attributes(product: str | None, region: str | None) -> dict[str, str]:
    return {k: v for k, v in (("product", product), ("region", region)) if v is not None}


T = TypeVar("T")


class Chooser(Protocol):
    def one(self, options: Sequence[T]) -> T: ...
    def integer(self, low: int, high: int) -> int: ...


def build_history(choose: Chooser, steps: int, prefix: str = "") -> list[ResponseEvent]:
    """What ingest would publish, in the order it would: submissions, revisions, erasures."""
    events: list[ResponseEvent] = []
    responses: list[ResponseSubmitted] = []
    versions: dict[str, int] = {}
    respondents = [f"{prefix}person-{i}" for i in range(choose.integer(1, 4))]
    for step in range(steps):
        now = START + timedelta(seconds=step)
        kind = choose.one(["submit", "submit", "submit", "revise", "erase"])
        if kind == "revise" and responses:
            original = choose.one(responses)
            versions[original.response_id] += 1
            events.append(
                ResponseRevised(
                    response_id=original.response_id,
                    respondent_id=original.respondent_id,
                    version=versions[original.response_id],
                    score=choose.integer(0, 10),
                    survey_id=original.survey_id,
                    channel=original.channel,
                    answered_at=original.answered_at,
                    attributes=attributes(choose.one(PRODUCTS), choose.one(REGIONS)),
                    comment=choose.one(COMMENTS),
                    revised_at=now,
                )
            )
        elif kind == "erase":
            events.append(
                RespondentErased(
                    erasure_id=f"{prefix}erasure-{step}", respondent_id=choose.one(respondents), requested_at=now
                )
            )
        else:
            submitted = ResponseSubmitted(
                response_id=f"{prefix}r{step}",
                respondent_id=choose.one(respondents),
                score=choose.integer(0, 10),
                channel=choose.one(CHANNELS),
                answered_at=now - timedelta(days=choose.integer(0, 40)),  # late ones land in their day
                attributes=attributes(choose.one(PRODUCTS), choose.one(REGIONS)),
                comment=choose.one(COMMENTS),
                submitted_at=now,
            )
            responses.append(submitted)
            versions[submitted.response_id] = 1
            events.append(submitted)
    return events


@dataclass
class Drawing:
    draw: st.DrawFn

    def one(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))


@dataclass
class Seeded:
    rng: random.Random

    def one(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)


@st.composite
def histories(draw: st.DrawFn, max_ops: int = 30) -> list[ResponseEvent]:
    return build_history(Drawing(draw), draw(st.integers(1, max_ops)))


@st.composite
def deliveries(draw: st.DrawFn, events: list[ResponseEvent]) -> list[ResponseEvent]:
    """At-least-once delivery: some events again (retries, redeliveries), in any order."""
    again = draw(st.lists(st.sampled_from(events), max_size=len(events))) if events else []
    return draw(st.permutations(events + again))


@dataclass(frozen=True)
class Final:
    score: int
    day: date
    channel: str | None
    attributes: dict[str, str]
    comment: str | None = None


def final_responses(events: list[ResponseEvent]) -> dict[str, Final]:
    """The responses that count, as they finally stand: the highest version of each; none of a
    respondent erased at or after the response was submitted."""
    latest: dict[str, ResponseSubmitted | ResponseRevised] = {}
    submitted: dict[str, datetime] = {}
    owner: dict[str, str] = {}
    erased: dict[str, datetime] = {}
    for e in events:
        if isinstance(e, RespondentErased):
            erased[e.respondent_id] = max(erased.get(e.respondent_id, e.requested_at), e.requested_at)
            continue
        version = e.version if isinstance(e, ResponseRevised) else 1
        current = latest.get(e.response_id)
        if current is None or version > (current.version if isinstance(current, ResponseRevised) else 1):
            latest[e.response_id] = e
        at = e.submitted_at if isinstance(e, ResponseSubmitted) else e.revised_at
        submitted[e.response_id] = min(submitted.get(e.response_id, at), at)
        owner[e.response_id] = e.respondent_id
    return {
        rid: Final(e.score, e.answered_at.astimezone(UTC).date(), e.channel, dict(e.attributes), e.comment)
        for rid, e in latest.items()
        if not (owner[rid] in erased and erased[owner[rid]] >= submitted[rid])
    }


def segments(r: Final, combos: bool = False) -> list[str]:
    found = ["all"]
    if r.channel:
        found.append(f"channel:{r.channel}")
    found += [f"{k}:{v}" for k, v in sorted(r.attributes.items())]
    if combos and "product" in r.attributes and "region" in r.attributes:
        found.append(f"product:{r.attributes['product']},region:{r.attributes['region']}")
    return found


def recompute(events: list[ResponseEvent], combos: bool = False) -> dict[tuple[str, date], Counts]:
    """Daily counts per segment, from scratch (default dimensions; `combos`: plus product+region)."""
    totals: dict[tuple[str, date], Counts] = defaultdict(Counts)
    for r in final_responses(events).values():
        for segment in segments(r, combos):
            totals[(segment, r.day)] += Counts.from_scores([r.score])
    return {k: c for k, c in totals.items() if c != Counts()}


def recompute_themes(
    events: list[ResponseEvent], tag: Callable[[str], Sequence[str]]
) -> dict[tuple[str, date], Counts]:
    """The themes consumer's daily counts from scratch: each final response under `_all@<segment>`,
    and, with a (non-blank) comment, `_commented@` and `<theme>@` for each theme `tag` finds."""
    totals: dict[tuple[str, date], Counts] = defaultdict(Counts)
    for r in final_responses(events).values():
        commented = bool(r.comment and r.comment.strip())
        names = ["_all", *(["_commented", *tag(r.comment or "")] if commented else [])]
        for segment in segments(r):
            for name in names:
                totals[(f"{name}@{segment}", r.day)] += Counts.from_scores([r.score])
    return {k: c for k, c in totals.items() if c != Counts()}


def kept_comments(events: list[ResponseEvent]) -> dict[str, str]:
    """The comments the themes consumer keeps: each final response's, stripped, if not blank."""
    return {rid: r.comment.strip() for rid, r in final_responses(events).items() if r.comment and r.comment.strip()}
