"""The follow-up policy: ordered rules, the first that matches a response decides what follow-up it
gets. Pure: loading and checking a policy file, matching a response, explaining a match.

(A rule's condition and how a response is tested against it: routing/matching.py.)

A rule matches on the response (category or score range, channel, survey, any attribute, whether it
has a comment) and on the respondent's history (first answer; the category of their previous one),
and picks an action (`referral`, `education`, `ticket`, `thank_you`, `none`, or a custom name a CRM
acts on), a priority (tickets) and a template. The policy's `version` is recorded on every follow-up.
docs/followup.md has the format with a full example."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from followup_service.experiments.assignment import InvalidArms, check_arms
from followup_service.experiments.spec import Experiment, ExperimentSpec, Holdout, compile_experiment
from followup_service.routing import messages
from followup_service.routing.domain import Routing
from followup_service.routing.matching import (
    Facts,
    Matcher,
    When,
    why_not,
)
from followup_service.tickets.domain import Priority

BUILTIN_ACTIONS = ("referral", "education", "ticket", "thank_you", "none")


ACTION_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"


DEFAULT_POLICY = Path(__file__).with_name("default_policy.yaml")


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
    # A share of the rule's people held out, or its people split across arms (docs/experiments.md)
    holdout: Holdout | None = None
    experiment: ExperimentSpec | None = None

    @model_validator(mode="after")
    def priority_for_tickets(self) -> Rule:
        for name in ("priority", "sla"):
            if getattr(self, name) is not None and self.action != "ticket":
                raise ValueError(f"{name} is for tickets; action {self.action!r} has none")
        return self

    def compiled_experiment(self) -> Experiment | None:
        return compile_experiment(self.name, self.action, self.template, self.holdout, self.experiment)


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
                                             rule.sla.resolution if rule.sla else None,
                                             rule.compiled_experiment()))
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

    @property
    def experiments(self) -> list[Experiment]:
        """The experiments its rules run, in the rules' order."""
        return [e for e in (rule.compiled_experiment() for rule in self.rules) if e is not None]

    @property
    def experiment_ids(self) -> frozenset[str]:
        """The ids of the experiments it runs (the others recorded have ended)."""
        return frozenset(e.experiment_id for e in self.experiments)

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
    experiment: Experiment | None = None  # the rule's holdout or experiment


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
            Routing(
                d.action,
                d.priority,
                d.rule,
                d.policy_version,
                d.template,
                d.first_contact_s,
                d.resolution_s,
                d.experiment,
            )
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
    experiments: dict[str, str] = {}
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
        problems += experiment_problems(rule, file, templates, experiments)
    return problems


def experiment_problems(rule: Rule, file: str, templates: set[str], seen: dict[str, str]) -> list[PolicyProblem]:
    """A rule's holdout or experiment: one of them, weights summing to 1, known templates, arms
    that differ, an id no other rule of the file uses (`seen`: id -> rule, filled as it goes)."""
    if rule.holdout is not None and rule.experiment is not None:
        field = "holdout"
        return [PolicyProblem(file, rule.name, field, "give a holdout or an experiment, not both")]
    experiment = rule.compiled_experiment()
    if experiment is None:
        return []
    field = "holdout" if rule.holdout is not None else "experiment"
    problems = []

    def problem(where: str, text: str) -> None:
        problems.append(PolicyProblem(file, rule.name, where, text))

    try:
        check_arms(experiment.weights)
    except InvalidArms as exc:
        problem(f"{field}.arms" if field == "experiment" else field, str(exc))
    if rule.action == "none" and rule.experiment is None:
        problem(field, "the rule's action is none: there is nothing to hold out")
    for name, arm in rule.experiment.arms.items() if rule.experiment else []:
        if arm.action == "none" and arm.template is not None:
            problem(f"experiment.arms.{name}.template", "a held-out arm (action none) sends nothing")
        elif arm.template is not None and arm.template not in templates:
            problem(f"experiment.arms.{name}.template", f"unknown template {arm.template!r}")
    if len({(a.action, a.template) for a in experiment.arms}) == 1:
        problem(
            f"{field}.arms" if field == "experiment" else field,
            "its arms do not differ: each gets the same action and template",
        )
    other = seen.get(experiment.experiment_id)
    if other is not None:
        problem(f"{field}.id", f"experiment id {experiment.experiment_id!r} is also rule {other}'s")
    seen.setdefault(experiment.experiment_id, rule.name)
    return problems


class PolicyHolder:
    """The policy the service runs, replaced by `reload()` only when the file checks out: a bad
    edit never takes the running policy away."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current = load(path)

    def read(self) -> Policy:
        """The file again, checked, not yet running; PolicyError if it does not check out. (The
        service installs it in `current` once its experiments check out against those recorded.)"""
        return load(self.path)
