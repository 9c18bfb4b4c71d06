"""The messages follow-ups carry: Jinja2 templates from the policy file, per template and locale,
rendered once when a follow-up is created, so a CRM or mail tool only has to send them.

Templates run in Jinja2's sandbox (no attribute of Python objects beyond plain data, no imports) with
strict undefined variables; the HTML body is autoescaped, so a comment like `<script>` arrives as
text. A template can use only the variables in VARIABLES; the policy check refuses any other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

VARIABLES = {
    "score": "the response's score (0-10)",
    "category": "promoter, passive or detractor",
    "comment": "the respondent's comment, or none",
    "channel": "the response's channel, or none",
    "survey_id": "the survey, or none",
    "attributes": "the response's attributes (attributes.plan, ...)",
    "response_id": "the response's id",
    "locale": "the locale the message is written in",
    "referral_code": "a referral follow-up's code (none for other kinds)",
}
FIELDS = ("subject", "text", "html")

_TEXT = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_HTML = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)


def environment(field: str) -> ImmutableSandboxedEnvironment:
    return _HTML if field == "html" else _TEXT


def problems_of(source: str, field: str) -> list[str]:
    """What is wrong with one template text: a syntax error, or a variable it may not use."""
    env = environment(field)
    try:
        parsed = env.parse(source)
    except TemplateError as exc:
        return [f"not a valid template: {exc}"]
    unknown = sorted(meta.find_undeclared_variables(parsed) - VARIABLES.keys())
    return [f"unknown variable {name!r} (a template can use: {', '.join(VARIABLES)})" for name in unknown]


# Not frozen: a frozen dataclass's __init__ (object.__setattr__ per field) costs ~8x, and one is made per event.
@dataclass(slots=True)
class Rendered:
    template: str
    locale: str
    subject: str
    body_text: str
    body_html: str | None


class RenderFailed(Exception):
    """A template that checked out but failed on this response (e.g. a filter on a missing value)."""


# Rendered parts kept per template part, by the values of the variables it reads: most messages
# read only the score or the category, so most follow-ups cost a lookup, not a render.
CACHE_SIZE = 4_096


class Part:
    """One compiled part of a message (subject, text or HTML), with the variables it reads and the
    texts it rendered for their values."""

    __slots__ = ("_cache", "_globals", "_plain", "reads", "template")

    def __init__(self, env: ImmutableSandboxedEnvironment, source: str) -> None:
        parsed = env.parse(source)
        self.template: Template = env.from_string(parsed)
        self.reads = tuple(sorted(meta.find_undeclared_variables(parsed)))
        self._globals = dict(self.template.globals)  # Jinja merges a ChainMap per render otherwise
        self._plain = "attributes" not in self.reads  # every value it reads is hashable as it is
        self._cache: dict[tuple[object, ...], str] = {}

    def render(self, variables: Mapping[str, Any]) -> str:
        """The part for these variables; RenderFailed when the template fails on them, whatever the
        error (a template's runtime error must never stop the batch)."""
        if self._plain:
            key = tuple(map(variables.get, self.reads))
        else:
            key = tuple(_hashable(variables.get(name)) for name in self.reads)
        text = self._cache.get(key)
        if text is None:
            env = self.template.environment
            context = env.context_class(env, self._globals | dict(variables), self.template.name,
                                        self.template.blocks, globals=self._globals)  # fmt: skip
            try:
                text = self.template.environment.concat(self.template.root_render_func(context))
            except Exception as exc:
                raise RenderFailed(f"{type(exc).__name__}: {exc}") from exc
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = text
        return text


def _hashable(value: object) -> object:
    return tuple(sorted(value.items())) if isinstance(value, dict) else value


@dataclass(frozen=True, slots=True)
class Compiled:
    subject: Part
    text: Part
    html: Part | None


def compile_message(message: Mapping[str, str | None]) -> Compiled:
    html = message.get("html")
    return Compiled(
        Part(_TEXT, message["subject"] or ""),
        Part(_TEXT, message["text"] or ""),
        Part(_HTML, html) if html is not None else None,
    )


def pick_locale(wanted: str | None, available: Mapping[str, Any], default: str) -> str:
    """The wanted locale if the template has it, else its language (`de` for `de-AT`), else the default."""
    if wanted:
        if wanted in available:
            return wanted
        language = wanted.split("-", 1)[0]
        if language in available:
            return language
    return default


def render(name: str, versions: Mapping[str, Compiled], default_locale: str, variables: Mapping[str, Any]) -> Rendered:
    attributes = variables.get("attributes") or {}
    locale = pick_locale(attributes.get("locale"), versions, default_locale)
    compiled = versions[locale]
    context = {**variables, "locale": locale}
    try:
        return Rendered(
            template=name,
            locale=locale,
            subject=compiled.subject.render(context).strip(),
            body_text=compiled.text.render(context),
            body_html=compiled.html.render(context) if compiled.html is not None else None,
        )
    except RenderFailed as exc:
        raise RenderFailed(f"template {name} ({locale}): {exc}") from exc
