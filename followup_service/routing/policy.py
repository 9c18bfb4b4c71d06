"""The follow-up policy: ordered rules, the first that matches a response decides what follow-up it
gets. Pure: loading and checking a policy file, matching a response, explaining a match.

A rule matches on the response (category or score range, channel, survey, any attribute, whether it
has a comment) and on the respondent's history (first answer; the category of their previous one),
and picks an action (`referral`, `education`, `ticket`, `thank_you`, `none`, or a custom name a CRM
acts on), a priority (tickets) and a template. The policy's `version` is recorded on every follow-up.
docs/followup.md has the format with a full example."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from followup_service.routing import messages
from followup_service.routing.domain import Routing
from followup_service.tickets.domain import Priority
from shared.nps import Category, classify

CategoryName = Literal["promoter", "passive", "detractor"]
BUILTIN_ACTIONS = ("referral", "education", "ticket", "thank_you", "none")
ACTION_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
DEFAULT_POLICY = Path(__file__).with_name("default_policy.yaml")
SCORES_OF: dict[CategoryName, frozenset[int]] = {
    "detractor": frozenset(range(7)),
    "passive": frozenset({7, 8}),
    "promoter": frozenset({9, 10}),
}

OneOrMore = Annotated[list[str], Field(min_length=1)]


def _listed(value: Any) -> Any:
    """`channel: web` and `channel: [web, email]` both mean a list."""
    return [value] if isinstance(value, str) else value


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

    _one_or_many = field_validator("category", "channel", "survey_id", mode="before")(_listed)

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
            self.channel or self.survey_id or self.attributes or self.comment or self.history
        )


_DURATION = re.compile(r"^(\d{1,6}(?:\.\d{1,3})?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 7 * 86_400}


def _seconds(value: Any) -> Any:
    """`4h`, `30m`, `2d`, `1w`, `45s`, or a number of seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match is None:
            raise ValueError("a duration: seconds, or a number with s, m, h, d or w (30m, 4h, 2d)")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_seconds), Field(gt=0, le=366 * 86_400)]


class RuleSla(BaseModel):
    """A ticket rule's own deadlines, instead of its priority's (NPS_FOLLOWUP_SLA)."""

    model_config = ConfigDict(extra="forbid")

    first_contact: Duration | None = None
    resolution: Duration | None = None

    @model_validator(mode="after")
    def something(self) -> RuleSla:
        if self.first_contact is None and self.resolution is None:
            raise ValueError("name first_contact, resolution or both")
        return self


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    when: When = Field(default_factory=When)
    action: str = Field(pattern=ACTION_PATTERN)
    priority: Priority | None = None
    sla: RuleSla | None = None
    template: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")

    @model_validator(mode="after")
    def priority_for_tickets(self) -> Rule:
        for name in ("priority", "sla"):
            if getattr(self, name) is not None and self.action != "ticket":
                raise ValueError(f"{name} is for tickets; action {self.action!r} has none")
        return self


class Message(BaseModel):
    """One template in one locale: a subject, a text body and (optionally) an HTML body."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=2_000)
    text: str = Field(min_length=1, max_length=50_000)
    html: str | None = Field(default=None, max_length=100_000)


Locale = Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")]
TemplateName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    default_locale: Locale = "en"
    rules: list[Rule] = Field(min_length=1)
    templates: dict[TemplateName, dict[Locale, Message]] = Field(default_factory=dict)
    _router: Router | None = PrivateAttr(default=None)

    def compile(self) -> None:
        """Compile every template and rule (after `check` found them sound)."""
        templates = {
            name: {locale: messages.compile_message(m.model_dump()) for locale, m in versions.items()}
            for name, versions in self.templates.items()
        }
        decisions: list[tuple[Matcher | None, Decision]] = [
            (Matcher.of(rule.when), Decision(rule.action, rule.priority or "normal", rule.name, index,
                                             rule.template, self.version,
                                             rule.sla.first_contact if rule.sla else None,
                                             rule.sla.resolution if rule.sla else None))
            for index, rule in enumerate(self.rules)
        ] + [(None, Decision("none", "normal", None, None, None, self.version))]  # fmt: skip
        self._router = Router(decisions, templates, self.default_locale)

    @property
    def router(self) -> Router:
        """The policy made quick to run (a plain object: a pydantic private attribute costs a few
        microseconds per access, and the batch handler asks twice per response)."""
        if self._router is None:
            self.compile()
        assert self._router is not None
        return self._router

    def render(self, template: str, variables: Mapping[str, Any]) -> messages.Rendered:
        """RenderFailed if the template fails on these values."""
        return self.router.render(template, variables)

    def decide(self, facts: Facts) -> Decision:
        """The first rule that matches; with none, action `none` (rule null)."""
        return self.router.decide(facts)

    def explain(self, facts: Facts) -> Explanation:
        skipped = []
        for rule in self.rules:
            reasons = why_not(rule.when, facts)
            if not reasons:
                break
            skipped.append((rule.name, reasons))
        return Explanation(self.decide(facts), skipped)


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
        )


CATEGORY_NAMES: dict[Category, CategoryName] = {
    Category.PROMOTER: "promoter",
    Category.PASSIVE: "passive",
    Category.DETRACTOR: "detractor",
}


@dataclass(frozen=True, slots=True)
class Decision:
    action: str
    priority: Priority
    rule: str | None  # None: no rule matched
    index: int | None
    template: str | None
    policy_version: str
    # A ticket rule's own SLA, in seconds (None: the priority's, NPS_FOLLOWUP_SLA)
    first_contact_s: float | None = None
    resolution_s: float | None = None


class Router:
    """A checked policy as the batch handler runs it: each rule's condition made quick to test with
    what it decides ((None, no rule) last), and the compiled templates."""

    __slots__ = ("_decisions", "_default_locale", "_routings", "_templates")

    def __init__(
        self,
        decisions: list[tuple[Matcher | None, Decision]],
        templates: dict[str, dict[str, messages.Compiled]],
        default_locale: str,
    ) -> None:
        self._decisions, self._templates, self._default_locale = decisions, templates, default_locale
        # What each decision means for routing, made once: route() runs once per response.
        self._routings = [
            Routing(d.action, d.priority, d.rule, d.policy_version, d.template, d.first_contact_s, d.resolution_s)
            for _, d in decisions
        ]

    def _first(self, facts: Facts) -> int:
        """The position of the first entry that matches (the last one always does)."""
        for position, (matcher, _) in enumerate(self._decisions):
            if matcher is None or matcher.matches(facts):
                return position
        raise AssertionError("the last entry always decides")

    def decide(self, facts: Facts) -> Decision:
        return self._decisions[self._first(facts)][1]

    def route(self, facts: Facts) -> Routing:
        """`decide`, as the routing the batch plans with."""
        return self._routings[self._first(facts)]

    def render(self, template: str, variables: Mapping[str, Any]) -> messages.Rendered:
        return messages.render(template, self._templates[template], self._default_locale, variables)


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    skipped: list[tuple[str, list[str]]]  # the rules before it, each with why it did not match


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
    return reasons


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    file: str
    rule: str | None  # the rule's name (or its position when it has none)
    field: str
    problem: str

    def __str__(self) -> str:
        where = f"rule {self.rule}, " if self.rule else ""
        return f"{self.file}: {where}{self.field}: {self.problem}"


class PolicyError(Exception):
    def __init__(self, problems: list[PolicyProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def load(path: Path, known_templates: Iterable[str] | None = None) -> Policy:
    """Read and check a policy file; PolicyError lists every problem, each naming the file, the
    rule and the field."""
    name = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PolicyError([PolicyProblem(name, None, "file", f"cannot be read: {exc.strerror}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise PolicyError(
            [PolicyProblem(name, None, where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]
        ) from None
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError([_problem(name, raw, e) for e in exc.errors(include_url=False)]) from None
    problems = check(policy, name, known_templates)
    if problems:
        raise PolicyError(problems)
    policy.compile()
    return policy


def _problem(file: str, raw: Any, error: Any) -> PolicyProblem:
    loc = list(error["loc"])
    rule = None
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        index = loc[1]
        rules = raw.get("rules") if isinstance(raw, dict) else None
        named = rules[index].get("name") if isinstance(rules, list) and isinstance(rules[index], dict) else None
        rule = str(named) if named else f"#{index + 1}"
        loc = loc[2:]
    # pydantic names a model-level problem by its validator ("consistent", "ordered"): keep the fields.
    fields = ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    message = re.sub(r"^Value error, ", "", str(error["msg"]))
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return PolicyProblem(file, rule, fields or "policy", message)


def check(policy: Policy, file: str, known_templates: Iterable[str] | None = None) -> list[PolicyProblem]:
    """What the models cannot see alone: duplicate names, rules that can never match, templates."""
    problems = []
    seen: set[str] = set()
    catch_all: str | None = None
    templates = set(known_templates) if known_templates is not None else set(policy.templates)
    for template, versions in policy.templates.items():
        if policy.default_locale not in versions:
            problems.append(
                PolicyProblem(
                    file, None, f"templates.{template}", f"no {policy.default_locale!r} version (the default locale)"
                )
            )
        for locale, message in versions.items():
            for part in messages.FIELDS:
                source = getattr(message, part)
                for problem in messages.problems_of(source, part) if source is not None else []:
                    problems.append(PolicyProblem(file, None, f"templates.{template}.{locale}.{part}", problem))
    for rule in policy.rules:
        if rule.name in seen:
            problems.append(PolicyProblem(file, rule.name, "name", "another rule has this name"))
        seen.add(rule.name)
        if catch_all is not None:
            problems.append(
                PolicyProblem(
                    file, rule.name, "when", f"can never match: rule {catch_all} before it matches everything"
                )
            )
        elif not rule.when.scores():
            problems.append(
                PolicyProblem(
                    file, rule.name, "when", "can never match: no score is in both its category and score range"
                )
            )
        if rule.when.unconditional() and catch_all is None:
            catch_all = rule.name
        if rule.template is not None and rule.template not in templates:
            problems.append(PolicyProblem(file, rule.name, "template", f"unknown template {rule.template!r}"))
    return problems


class PolicyHolder:
    """The policy the service runs, replaced by `reload()` only when the file checks out: a bad
    edit never takes the running policy away."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current = load(path)

    def reload(self) -> Policy:
        """Read the file again; PolicyError (and the current policy kept) if it does not check out."""
        self.current = load(self.path)
        return self.current
