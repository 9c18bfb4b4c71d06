"""A policy rule's condition: what it says (`When`, as the policy file writes it), what it looks at
(`Facts` of a response and the person's history), and testing a response against it, quickly
(`Matcher`, once per response) or with the reasons it fails (`why_not`, for explain). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.nps import Category, classify

CategoryName = Literal["promoter", "passive", "detractor"]


SCORES_OF: dict[CategoryName, frozenset[int]] = {
    "detractor": frozenset(range(7)),
    "passive": frozenset({7, 8}),
    "promoter": frozenset({9, 10}),
}


OneOrMore = Annotated[list[str], Field(min_length=1)]


def _listed(value: Any) -> Any:
    """`channel: web` and `channel: [web, email]` both mean a list."""
    return [value] if isinstance(value, str) else value


IdentityName = Literal["server", "verified", "anonymous"]


class ScoreRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: int = Field(default=0, ge=0, le=10)
    max: int = Field(default=10, ge=0, le=10)

    @model_validator(mode="after")
    def ordered(self) -> ScoreRange:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class History(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_answer: bool | None = Field(default=None, description="true: the person's first answer; false: not")
    previous_category: list[CategoryName] | None = None

    _one_or_many = field_validator("previous_category", mode="before")(_listed)

    @model_validator(mode="after")
    def consistent(self) -> History:
        if self.first_answer and self.previous_category:
            raise ValueError("a first answer has no previous category")
        return self


class When(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: list[CategoryName] | None = None
    score: ScoreRange | None = None
    channel: OneOrMore | None = None
    survey_id: OneOrMore | None = None
    attributes: dict[str, OneOrMore] = Field(default_factory=dict)
    comment: Literal["present", "absent"] | None = None
    history: History | None = None
    # Who vouches for the respondent: `server` (a secret key), `verified` (a publishable key with the
    # hash the app's server made), `anonymous` (a random id a page made: nobody to follow up with).
    identity: list[IdentityName] | None = None

    _one_or_many = field_validator("category", "channel", "survey_id", "identity", mode="before")(_listed)

    @field_validator("attributes", mode="before")
    @classmethod
    def _attribute_lists(cls, value: Any) -> Any:
        return {k: _listed(v) for k, v in value.items()} if isinstance(value, dict) else value

    def scores(self) -> frozenset[int]:
        """The scores this condition lets through (category and score range together)."""
        allowed = frozenset(range(11))
        if self.category is not None:
            allowed = frozenset().union(*(SCORES_OF[c] for c in self.category))
        if self.score is not None:
            allowed &= frozenset(range(self.score.min, self.score.max + 1))
        return allowed

    def unconditional(self) -> bool:
        return self.scores() == frozenset(range(11)) and not (
            self.channel or self.survey_id or self.attributes or self.comment or self.history or self.identity
        )


# Not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs ~8x, and one is made per event.
@dataclass(slots=True)
class Facts:
    """What a rule can look at: the response, and the respondent's history."""

    score: int
    channel: str | None = None
    survey_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    has_comment: bool = False
    first_answer: bool = True
    previous_category: CategoryName | None = None
    identity: IdentityName = "server"

    @property
    def category(self) -> CategoryName:
        return CATEGORY_NAMES[classify(self.score)]

    @classmethod
    def of(
        cls,
        score: int,
        channel: str | None,
        survey_id: str | None,
        attributes: Mapping[str, str],
        comment: str | None,
        previous_score: int | None,
        identity: IdentityName = "server",
    ) -> Facts:
        """From a response and the person's previous score (None: this is their first answer)."""
        return cls(
            score=score,
            channel=channel,
            survey_id=survey_id,
            attributes=attributes,
            has_comment=bool(comment and comment.strip()),
            first_answer=previous_score is None,
            previous_category=CATEGORY_NAMES[classify(previous_score)] if previous_score is not None else None,
            identity=identity,
        )


CATEGORY_NAMES: dict[Category, CategoryName] = {
    Category.PROMOTER: "promoter",
    Category.PASSIVE: "passive",
    Category.DETRACTOR: "detractor",
}


@dataclass(frozen=True, slots=True)
class Matcher:
    """A rule's condition as `decide` tests it once per response: `why_not` without the reasons,
    its sets built once. They must agree (a property test checks it)."""

    scores: frozenset[int]
    channel: frozenset[str] | None
    survey_id: frozenset[str] | None
    attributes: tuple[tuple[str, frozenset[str]], ...]
    comment: bool | None
    first_answer: bool | None
    previous_category: frozenset[str] | None
    identity: frozenset[str] | None = None

    @classmethod
    def of(cls, when: When) -> Matcher:
        history = when.history or History()
        return cls(
            scores=when.scores(),
            channel=frozenset(when.channel) if when.channel is not None else None,
            survey_id=frozenset(when.survey_id) if when.survey_id is not None else None,
            attributes=tuple((k, frozenset(v)) for k, v in when.attributes.items()),
            comment=None if when.comment is None else when.comment == "present",
            first_answer=history.first_answer,
            previous_category=frozenset(history.previous_category) if history.previous_category is not None else None,
            identity=frozenset(when.identity) if when.identity is not None else None,
        )

    def matches(self, facts: Facts) -> bool:
        return (
            facts.score in self.scores
            and (self.channel is None or facts.channel in self.channel)
            and (self.survey_id is None or facts.survey_id in self.survey_id)
            and (not self.attributes or all(facts.attributes.get(n) in values for n, values in self.attributes))
            and (self.comment is None or self.comment == facts.has_comment)
            and (self.first_answer is None or self.first_answer == facts.first_answer)
            and (self.previous_category is None or facts.previous_category in self.previous_category)
            and (self.identity is None or facts.identity in self.identity)
        )


def why_not(when: When, facts: Facts) -> list[str]:
    """Why `when` does not match `facts` (empty: it matches)."""
    reasons = []
    if facts.score not in when.scores():
        reasons.append(f"score {facts.score} ({facts.category}) is not in the rule's scores")
    if when.channel is not None and facts.channel not in when.channel:
        reasons.append(f"channel {facts.channel!r} is not one of {when.channel}")
    if when.survey_id is not None and facts.survey_id not in when.survey_id:
        reasons.append(f"survey_id {facts.survey_id!r} is not one of {when.survey_id}")
    for name, values in when.attributes.items():
        if facts.attributes.get(name) not in values:
            reasons.append(f"attribute {name} {facts.attributes.get(name)!r} is not one of {values}")
    if when.comment is not None and (when.comment == "present") != facts.has_comment:
        reasons.append(f"the comment is {'present' if facts.has_comment else 'absent'}")
    if when.history is not None:
        if when.history.first_answer is not None and when.history.first_answer != facts.first_answer:
            reasons.append("it is " + ("the person's first answer" if facts.first_answer else "not their first answer"))
        previous = when.history.previous_category
        if previous is not None and facts.previous_category not in previous:
            reasons.append(f"the previous category {facts.previous_category!r} is not one of {previous}")
    if when.identity is not None and facts.identity not in when.identity:
        reasons.append(f"the identity {facts.identity!r} is not one of {when.identity}")
    return reasons
