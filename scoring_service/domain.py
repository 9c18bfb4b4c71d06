"""Scoring rules: which segments a response belongs to, and how a batch changes the daily counts.
Pure: no I/O, no clock."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from shared.nps import Counts, classify

OVERALL = "all"
BUILTIN_DIMENSIONS = ("channel", "survey_id")
_DIMENSION = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True, slots=True)
class ScoredResponse:
    """What scoring keeps of a response (no comment, no email: it does not need them)."""

    response_id: str
    respondent_id: str
    score: int
    day: date
    channel: str | None
    survey_id: str | None
    attributes: Mapping[str, str]


def segment_key(dimension: str, value: str) -> str:
    return f"{dimension}:{value}"


def segments_of(response: ScoredResponse) -> list[str]:
    """Every segment the response counts in: overall, its channel, its survey, each attribute."""
    keys = [OVERALL]
    if response.channel is not None:
        keys.append(segment_key("channel", response.channel))
    if response.survey_id is not None:
        keys.append(segment_key("survey_id", response.survey_id))
    keys.extend(segment_key(k, v) for k, v in sorted(response.attributes.items()))
    return keys


def parse_segment(text: str) -> str:
    """Validate a segment query (`all`, or `dimension:value`) and return its storage key."""
    if text == OVERALL:
        return text
    dimension, sep, value = text.partition(":")
    if not sep or not value:
        raise ValueError(f"segment must be 'all' or 'dimension:value', got {text!r}")
    if not _DIMENSION.match(dimension):
        raise ValueError(f"unknown dimension {dimension!r}: dimensions are lower_snake_case names")
    return segment_key(dimension, value)


def daily_deltas(responses: Iterable[ScoredResponse]) -> dict[tuple[str, date], Counts]:
    """Pre-aggregate a batch into one delta per (segment, day): one upsert row each, however
    many responses the batch holds."""
    deltas: dict[tuple[str, date], Counts] = {}
    for response in responses:
        one = Counts.of(classify(response.score))
        for segment in segments_of(response):
            key = (segment, response.day)
            deltas[key] = deltas.get(key, Counts()) + one
    return deltas


def first_occurrences(responses: Iterable[ScoredResponse]) -> list[ScoredResponse]:
    """Drop repeats of a response_id within one batch (a retried POST can land in the same batch)."""
    seen: set[str] = set()
    unique = []
    for response in responses:
        if response.response_id not in seen:
            seen.add(response.response_id)
            unique.append(response)
    return unique
