"""Scoring rules: which segments a response counts in, and how a batch of events changes the stored
responses and the daily counts. Pure: no I/O, no clock.

Exactness does not depend on delivery order. The stored state of a response is a function of the
*set* of events seen for it, and the daily counts are the sum of the stored states:

- the highest `version` seen wins (a submission is version 1, each revision one more);
- a response is erased once any erasure of its respondent was requested at or after the earliest
  moment seen for that response (its submission): that erasure covers it, whenever it arrives;
- an erased response keeps only its id, version and that moment (to absorb redeliveries), never
  its score, day or segments.

So duplicates, redeliveries, late, reordered and revised events all converge on the same state, and
the counts equal a recompute over that state (tests/integration/test_scoring_exactness.py)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

import msgspec

from shared.nps import Category, Counts, classify
from shared.segments import NAME, OVERALL, PART

SEPARATOR = "\x1f"
OTHER = "other"
ANY_ATTRIBUTE = "*"
BUILTIN_DIMENSIONS = ("channel", "survey_id")
_DIMENSION = re.compile(rf"^{NAME}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# Version and Stored are made once per event and per changed row on the hot path: as frozen msgspec
# structs (immutable and hashable as frozen dataclasses are) each costs 0.08 µs to build against
# 1.06 µs for a frozen slots dataclass, whose __init__ sets each field through object.__setattr__.
# Untracked by the cycle collector (gc=False): they hold strings, dates, tuples and a str mapping.


class Version(msgspec.Struct, frozen=True, gc=False):
    """One version of a response, as a ResponseSubmitted (version 1) or ResponseRevised states it."""

    response_id: str
    respondent_key: str
    version: int
    score: int
    day: date
    channel: str | None
    survey_id: str | None
    attributes: Mapping[str, str]
    at: datetime  # submitted_at or revised_at (ingest's clock)
    comment: str | None = None  # read by the themes consumer only


class Stored(msgspec.Struct, frozen=True, gc=False):
    """A row of scoring.responses: the state a response converged on."""

    response_id: str
    respondent_key: str
    version: int
    first_at: datetime
    erased: bool = False
    score: int | None = None
    day: date | None = None
    segments: tuple[str, ...] = ()


# --- segments ---


@dataclass(frozen=True)
class Dimensions:
    """What responses are counted by: the configured single dimensions (`*`: every attribute key)
    and combinations of them, e.g. product+region."""

    single: tuple[str, ...] = ("channel", "survey_id", ANY_ATTRIBUTE)
    combinations: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def parse(cls, single: str, combinations: str) -> Dimensions:
        names = tuple(n.strip() for n in single.split(",") if n.strip())
        for name in names:
            if name != ANY_ATTRIBUTE and not _DIMENSION.match(name):
                raise ValueError(f"dimension {name!r} is not a lower_snake_case name or '*'")
        combos = []
        for text in combinations.replace("\u00d7", "+").split(","):
            if not text.strip():
                continue
            parts = tuple(sorted(p.strip() for p in text.split("+")))
            if len(parts) < 2 or len(set(parts)) != len(parts) or not all(_DIMENSION.match(p) for p in parts):
                raise ValueError(f"combination {text.strip()!r} must join two or more dimension names with '+'")
            combos.append(parts)
        return cls(names, tuple(combos))

    def knows(self, dimension: str) -> bool:
        """Whether `dimension` (a name, or `a,b` for a combination) is counted."""
        if "," in dimension:
            return tuple(dimension.split(",")) in self.combinations
        return dimension in self.single or (ANY_ATTRIBUTE in self.single and dimension not in BUILTIN_DIMENSIONS)

    @functools.cached_property
    def _wanted(self) -> tuple[bool, bool, bool, frozenset[str]]:
        return (
            "channel" in self.single,
            "survey_id" in self.single,
            ANY_ATTRIBUTE in self.single,
            frozenset(self.single),
        )

    def values_of(self, version: Version) -> list[tuple[str, str]]:
        """(dimension, value) of every single dimension the response has, sorted. A value's unit
        separator (U+001F, how segment lists travel to PostgreSQL) is replaced: it cannot split a key."""
        channel, survey, any_attribute, named = self._wanted
        found = [
            (key, value)
            for key, value in version.attributes.items()
            if any_attribute or key in named  # channel and survey_id are never attribute keys
        ]
        if channel and version.channel is not None:
            found.append(("channel", version.channel))
        if survey and version.survey_id is not None:
            found.append(("survey_id", version.survey_id))
        found.sort()
        if any(SEPARATOR in value for _, value in found):
            return [(key, value.replace(SEPARATOR, "\ufffd")) for key, value in found]
        return found

    def combined(self, values: Mapping[str, str]) -> list[tuple[str, str]]:
        """(combination, value) of every configured combination the response has all parts of."""
        out = []
        for combo in self.combinations:
            if all(part in values for part in combo):
                out.append((",".join(combo), ",".join(f"{part}:{values[part]}" for part in combo)))
        return out


def segment_key(dimension: str, value: str) -> str:
    """`channel:email`; for a combination the value already names its parts: `product:atlas,region:eu`."""
    return value if "," in dimension else f"{dimension}:{value}"


def split_segment(key: str) -> tuple[str, str]:
    """(dimension, value) of a stored segment key."""
    parts = PART.split(key)
    if len(parts) == 1:
        dimension, _, value = key.partition(":")
        return dimension, value
    return ",".join(p.partition(":")[0] for p in parts), key


def parse_segment(text: str, dimensions: Dimensions | None = None) -> str:
    """Validate a segment query (`all`, `dimension:value`, or `a:1,b:2` for a configured
    combination, in any order) and return its storage key. ValueError says what is wrong."""
    if text == OVERALL:
        return text
    if _CONTROL.search(text):  # ingest never accepts them, and PostgreSQL refuses NUL
        raise ValueError("a segment holds no control characters")
    parts = PART.split(text)
    pairs = []
    for part in parts:
        dimension, sep, value = part.partition(":")
        if not sep or not value:
            raise ValueError(f"segment must be 'all', 'dimension:value' or 'a:1,b:2', got {text!r}")
        if not _DIMENSION.match(dimension):
            raise ValueError(f"unknown dimension {dimension!r}: dimensions are lower_snake_case names")
        pairs.append((dimension, value))
    pairs.sort()
    if len({d for d, _ in pairs}) != len(pairs):
        raise ValueError(f"segment {text!r} names a dimension twice")
    dimension = ",".join(d for d, _ in pairs)
    if dimensions is not None and not dimensions.knows(dimension):
        raise ValueError(f"unknown dimension {dimension!r}: not configured (NPS_SCORING_DIMENSIONS/COMBINATIONS)")
    if len(pairs) == 1:
        return segment_key(*pairs[0])
    return ",".join(f"{d}:{v}" for d, v in pairs)


def parse_dimension(text: str, dimensions: Dimensions) -> str:
    """A dimension query (`product`, or `product,region` / `product+region` for a combination)."""
    parts = sorted(p.strip() for p in text.replace("+", ",").split(","))
    if not all(_DIMENSION.match(p) for p in parts):
        raise ValueError(f"dimension must be a lower_snake_case name or 'a,b', got {text!r}")
    dimension = ",".join(parts)
    if not dimensions.knows(dimension):
        raise ValueError(f"unknown dimension {dimension!r}: not configured (NPS_SCORING_DIMENSIONS/COMBINATIONS)")
    return dimension


@dataclass
class SegmentPlan:
    """Which segment each (dimension, value) is counted under, with the cardinality cap applied:
    past `cap` values of one dimension, new values are counted under `other`."""

    known: set[tuple[str, str]]
    per_dimension: dict[str, int]
    cap: int
    # segments_of's answer per (dimension, value) list, for the rest of the batch: once a list was
    # admitted, admitting it again changes nothing and answers the same (a value past the cap stays
    # past it: the counts only grow). Most of a batch's responses share a few hundred lists.
    answered: dict[tuple[tuple[str, str], ...], tuple[str, ...]] = field(default_factory=dict)
    # The same answers by the response's description (see `description`): most of a batch repeats a
    # few hundred descriptions, so most responses skip working their values out at all.
    described: dict[tuple[object, ...], tuple[str, ...]] = field(default_factory=dict)

    def admit(self, dimension: str, value: str) -> str:
        if (dimension, value) in self.known:
            return value
        if self.per_dimension.get(dimension, 0) >= self.cap:
            return OTHER
        self.known.add((dimension, value))
        self.per_dimension[dimension] = self.per_dimension.get(dimension, 0) + 1
        return value


def description(version: Version) -> tuple[object, ...]:
    """What a response's (dimension, value) pairs are worked out from: its channel, survey and
    attributes (in the order they came: the same attributes in another order are another key, which
    only costs a second working out)."""
    return (version.channel, version.survey_id, *version.attributes.items())


def segments_of(version: Version, dimensions: Dimensions, plan: SegmentPlan) -> tuple[str, ...]:
    """Every segment the response counts in: overall, each dimension, each combination."""
    described = description(version)
    found = plan.described.get(described)
    if found is not None:
        return found
    values = tuple(dimensions.values_of(version))
    found = plan.answered.get(values)
    if found is not None:
        plan.described[described] = found
        return found
    capped = {d: plan.admit(d, v) for d, v in values}
    keys = [OVERALL, *(segment_key(d, v) for d, v in capped.items())]
    for combo, value in dimensions.combined(capped):
        admitted = plan.admit(combo, value)
        keys.append(segment_key(combo, admitted) if admitted != OTHER else f"{combo}:{OTHER}")
    found = plan.answered[values] = plan.described[described] = tuple(keys)
    return found


def candidate_values(versions: Iterable[Version], dimensions: Dimensions) -> set[tuple[str, str]]:
    """The (dimension, value) pairs a batch may need admitted (combinations uncapped): looked up
    in the catalog before applying; an older version's pairs are looked up for nothing, harmlessly."""
    found: set[tuple[str, str]] = set()
    seen: set[tuple[object, ...]] = set()
    for version in versions:
        described = description(version)
        if described in seen:
            continue
        seen.add(described)
        values = dict(dimensions.values_of(version))
        found.update(values.items())
        found.update(dimensions.combined(values))
    return found


BreakdownSort = Literal["nps", "-nps", "n", "-n", "value"]
_BREAKDOWN_ORDER: dict[str, Callable[[tuple[str, Counts]], tuple[float | str, ...]]] = {
    "nps": lambda vc: (-(vc[1].nps or 0.0), -vc[1].n, vc[0]),  # highest first
    "-nps": lambda vc: (vc[1].nps or 0.0, -vc[1].n, vc[0]),  # lowest first
    "n": lambda vc: (-vc[1].n, vc[0]),  # most responses first
    "-n": lambda vc: (vc[1].n, vc[0]),
    "value": lambda vc: (vc[0],),
}


def ordered(values: Mapping[str, Counts], sort: BreakdownSort) -> list[tuple[str, Counts]]:
    """A breakdown's values in the requested order; ties go to more responses, then the value."""
    return sorted(values.items(), key=_BREAKDOWN_ORDER[sort])


# --- applying a batch ---


@dataclass(frozen=True, slots=True)
class Outcome:
    rows: list[Stored]  # rows whose state changed (to upsert)
    deltas: dict[tuple[str, date], Counts]  # per (segment, day), non-zero
    versions_applied: int  # versions that replaced what was stored (or were new)
    versions_ignored: int  # duplicates, redeliveries and out-of-date versions
    erased: int  # responses newly erased


def newest(versions: Iterable[Version]) -> dict[str, Version]:
    best: dict[str, Version] = {}
    for v in versions:
        if v.response_id not in best or v.version > best[v.response_id].version:
            best[v.response_id] = v
    return best


def apply(
    existing: Mapping[str, Stored],
    versions: Sequence[Version],
    erasures: Mapping[str, datetime],
    segments: Callable[[Version], tuple[str, ...]],
) -> Outcome:
    """The new state of every response the batch touches, and the count deltas that follow.

    `existing` holds the stored rows of the batch's response ids and of every respondent erased in
    the batch; `erasures` the latest erasure request per respondent key, stored and new together.
    """
    best = newest(versions)
    earliest: dict[str, datetime] = {}
    for v in versions:
        if v.response_id not in earliest or v.at < earliest[v.response_id]:
            earliest[v.response_id] = v.at
    rows: list[Stored] = []
    acc: dict[tuple[str, date], list[int]] = {}  # [promoters, passives, detractors]: the hot loop
    applied = erased_now = 0
    for response_id in sorted(best.keys() | existing.keys()):
        old = existing.get(response_id)
        incoming = best.get(response_id)
        if old is not None and incoming is not None and incoming.respondent_key != old.respondent_key:
            incoming = None  # an id reused by another respondent: ingest refuses this; first one stays
        first_at = min(t for t in (old.first_at if old else None, earliest.get(response_id)) if t is not None)
        key = old.respondent_key if old else best[response_id].respondent_key
        erasure = erasures.get(key)
        erased = erasure is not None and erasure >= first_at
        newer = incoming is not None and (old is None or incoming.version > old.version)
        version = incoming.version if newer and incoming else (old.version if old else 1)
        if erased:
            new = Stored(response_id, key, version, first_at, erased=True)
        elif newer and incoming is not None:
            new = Stored(
                response_id, key, version, first_at, score=incoming.score, day=incoming.day, segments=segments(incoming)
            )
        else:
            assert old is not None
            new = msgspec.structs.replace(old, first_at=first_at)
        if new == old:
            continue
        applied += int(newer)
        erased_now += int(erased and not (old is not None and old.erased))
        rows.append(new)
        if old is not None:
            _accumulate(acc, old, -1)
        _accumulate(acc, new, 1)
    deltas = {k: Counts(*cell) for k, cell in acc.items() if cell != [0, 0, 0]}
    return Outcome(rows, deltas, applied, len(versions) - applied, erased_now)


_CELL = {Category.PROMOTER: 0, Category.PASSIVE: 1, Category.DETRACTOR: 2}


def _accumulate(acc: dict[tuple[str, date], list[int]], row: Stored, sign: int) -> None:
    """Add (sign 1) or take away (sign -1) what a stored row counts, per (segment, day)."""
    if row.erased or row.score is None or row.day is None:
        return
    category = _CELL[classify(row.score)]
    for segment in row.segments:
        cell = acc.get((segment, row.day))
        if cell is None:
            cell = acc[(segment, row.day)] = [0, 0, 0]
        cell[category] += sign


def recompute(rows: Iterable[Stored]) -> dict[tuple[str, date], Counts]:
    """The daily counts from scratch: what `nps scoring rebuild` writes, and what tests compare."""
    acc: dict[tuple[str, date], list[int]] = {}
    for row in rows:
        _accumulate(acc, row, 1)
    return {k: Counts(*cell) for k, cell in acc.items() if cell != [0, 0, 0]}
