"""Themes: what a comment is about. Pure: loading and checking a taxonomy, normalising text,
tagging a comment. docs/themes.md has the taxonomy's format and what tagging handles.

Normalisation: casefold, accents stripped (é -> e; German umlauts too: ü -> u, so "müde" and "muede"
differ, but typed with or without the accent they agree), "n't" -> " not", everything but letters and
digits a space, then each word stemmed with Snowball (PyStemmer) in the taxonomy's languages.

Matching: every phrase, stemmed the same way, goes into one dictionary keyed by its first stem, so a
comment costs one lookup per word per language (microseconds), however many phrases there are. A
one-word phrase whose stem has six letters or more also matches one typo away (a letter missing,
extra, changed, or two swapped), through a table of each phrase's one-letter deletions. Patterns are regular
expressions over the normalised text before stemming, all of a language in one alternation.

Negation: a phrase a theme lists as `negatable` does not count when one of the two words before it
is a negation (not, no, never, without, hardly, nothing, nicht, kein, nie, ohne, ...). That is all
the negation handled: "not slow" is not performance pain, "I would not call it fast" is not seen.
"""

from __future__ import annotations

import json
import os
import re
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import Stemmer
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_THEMES = Path(__file__).with_name("default_themes.yaml")
THEME_NAME = r"^[a-z][a-z0-9_]{0,39}$"
LANGUAGES = {"en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian", "nl": "dutch",
             "pt": "portuguese", "sv": "swedish", "da": "danish", "no": "norwegian", "fi": "finnish"}  # fmt: skip
NEGATIONS = frozenset(
    {"not", "no", "never", "without", "hardly", "barely", "nothing", "none", "nor", "neither", "cannot"}  # "n't": not
    | {"nicht", "kein", "keine", "keinen", "keinem", "keiner", "nie", "niemals", "ohne", "kaum", "nichts"}  # German
)
# Typos are forgiven on stems of six letters or more: shorter ones are one letter from too many
# other words ("pack"/"lack", "chang"/"charg").
FUZZY_MIN = 6
_NOT = re.compile(r"n['\u2019]t\b")  # an apostrophe, typed or typographic
_NON_WORD = re.compile(r"[^0-9a-zß]+")


class ThemesError(ValueError):
    """A taxonomy that cannot be used: the message names the file, the theme and the field."""


class ThemeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=100)
    phrases: dict[str, list[str]] = Field(default_factory=dict)
    patterns: dict[str, list[str]] = Field(default_factory=dict)
    negatable: list[str] = Field(default_factory=list)

    @field_validator("phrases", "patterns")
    @classmethod
    def _no_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for language, items in value.items():
            if any(not str(item).strip() for item in items):
                raise ValueError(f"{language}: an empty entry")
        return value


class TaxonomySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    languages: list[str] = Field(min_length=1)
    themes: dict[str, ThemeSpec] = Field(min_length=1)


def normalise(text: str) -> str:
    """Casefolded, accents off, "n't" -> " not", only letters and digits separated by single spaces."""
    folded = _NOT.sub(" not", text.casefold())
    plain = "".join(c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c))
    return _NON_WORD.sub(" ", plain).strip()


@lru_cache(maxsize=16)
def _stemmer(language: str) -> Any:
    return Stemmer.Stemmer(LANGUAGES[language])


def stems(words: Sequence[str], language: str) -> list[str]:
    return list(_stemmer(language).stemWords(words))


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


@dataclass(frozen=True, slots=True)
class _Phrase:
    theme: str
    stems: tuple[str, ...]
    negatable: bool


@dataclass
class _Language:
    code: str
    by_first: dict[str, list[_Phrase]] = field(default_factory=dict)
    fuzzy: dict[str, list[_Phrase]] = field(default_factory=dict)  # a deletion of a long one-word phrase
    long_words: dict[str, list[_Phrase]] = field(default_factory=dict)  # those phrases' own stems
    patterns: list[tuple[str, re.Pattern[str]]] = field(default_factory=list)
    # `_near`'s answer for each stem met, as words repeat across comments: one lookup instead of a
    # deletion set and its probes each time (bounded: emptied when full).
    near: dict[str, tuple[_Phrase, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Taxonomy:
    version: str
    labels: Mapping[str, str]
    languages: tuple[_Language, ...]

    @property
    def themes(self) -> list[str]:
        return sorted(self.labels)

    def tag(self, comment: str | None) -> tuple[str, ...]:
        """The themes a comment mentions, sorted; () for no comment or none."""
        if not comment:
            return ()
        text = normalise(comment)
        if not text:
            return ()
        words = text.split()
        found: set[str] = set()
        for language in self.languages:
            found |= _match(language, words, text)
        return tuple(sorted(found))


def _match(language: _Language, words: list[str], text: str) -> set[str]:
    found: set[str] = set()
    stemmed = stems(words, language.code)
    for i, stem in enumerate(stemmed):
        candidates: Sequence[_Phrase] | None = language.by_first.get(stem)
        if candidates is None and len(stem) >= FUZZY_MIN:
            candidates = _near(language, stem)
        for phrase in candidates or ():
            n = len(phrase.stems)
            if phrase.theme in found or (n > 1 and tuple(stemmed[i : i + n]) != phrase.stems):
                continue
            if phrase.negatable and any(w in NEGATIONS for w in words[max(0, i - 2) : i]):
                continue
            found.add(phrase.theme)
    for theme, pattern in language.patterns:
        if theme not in found and pattern.search(text):
            found.add(theme)
    return found


NEAR_CACHED = 50_000  # stems whose near phrases a language keeps


def _near(language: _Language, stem: str) -> tuple[_Phrase, ...]:
    """One-word phrases one edit away: a deletion of the word is a phrase (an extra letter typed), the
    word is a deletion of a phrase (one missing), or they share a deletion (one changed or swapped)."""
    known = language.near.get(stem)
    if known is not None:
        return known
    near: list[_Phrase] = []
    for variant in _deletions(stem):
        near.extend(language.long_words.get(variant, ()))
        near.extend(language.fuzzy.get(variant, ()))
    near.extend(language.fuzzy.get(stem, ()))
    if len(language.near) >= NEAR_CACHED:
        language.near.clear()
    found = language.near[stem] = tuple(near)
    return found


def compile_taxonomy(spec: TaxonomySpec, source: str = "<taxonomy>") -> Taxonomy:
    problems: list[str] = []
    for code in spec.languages:
        if code not in LANGUAGES:
            problems.append(f"{source}: languages: {code!r} is not one of {', '.join(sorted(LANGUAGES))}")
    compiled = {code: _Language(code) for code in spec.languages if code in LANGUAGES}
    for name, theme in sorted(spec.themes.items()):
        if not re.match(THEME_NAME, name):
            problems.append(f"{source}: theme {name!r}: a name is lower_snake_case, at most 40 characters")
        listed = {p for items in theme.phrases.values() for p in items}
        for word in theme.negatable:
            if word not in listed:
                problems.append(f"{source}: theme {name!r}: negatable: {word!r} is not one of its phrases")
        negatable = set(theme.negatable)
        if not any(theme.phrases.values()) and not any(theme.patterns.values()):
            problems.append(f"{source}: theme {name!r}: no phrases and no patterns: it can never match")
        for code in {**theme.phrases, **theme.patterns}:
            if code not in spec.languages:
                problems.append(f"{source}: theme {name!r}: language {code!r} is not in `languages`")
        for code, items in theme.phrases.items():
            language = compiled.get(code)
            if language is None:
                continue
            for text in items:
                words = normalise(text).split()
                if not words:
                    problems.append(f"{source}: theme {name!r}: phrases.{code}: {text!r} has no letters or digits")
                    continue
                phrase = _Phrase(name, tuple(stems(words, code)), text in negatable)
                language.by_first.setdefault(phrase.stems[0], []).append(phrase)
                if len(words) == 1 and len(phrase.stems[0]) >= FUZZY_MIN:
                    language.long_words.setdefault(phrase.stems[0], []).append(phrase)
                    for variant in _deletions(phrase.stems[0]):
                        language.fuzzy.setdefault(variant, []).append(phrase)
        for code, items in theme.patterns.items():
            language = compiled.get(code)
            for text in items:
                try:
                    pattern = re.compile(text)
                except re.error as exc:
                    problems.append(f"{source}: theme {name!r}: patterns.{code}: {text!r}: {exc}")
                    continue
                if language is not None:
                    language.patterns.append((name, pattern))
    if problems:
        raise ThemesError("\n".join(problems))
    return Taxonomy(spec.version, {n: t.label for n, t in spec.themes.items()}, tuple(compiled.values()))


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """The taxonomy in `path` (None: the default), checked; ThemesError lists every problem."""
    source = Path(path) if path else DEFAULT_THEMES
    try:
        raw = yaml.safe_load(source.read_text())
    except OSError as exc:
        raise ThemesError(f"{source}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ThemesError(f"{source}: not YAML: {exc}") from None
    try:
        spec = TaxonomySpec.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{source}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ThemesError("\n".join(problems)) from None
    return compile_taxonomy(spec, str(source))


ALL = "_all"  # every response of the segment: the themes' denominators come from the same counts
COMMENTED = "_commented"  # the segment's responses with a comment


def theme_keys(segments: Sequence[str], themes: Sequence[str], commented: bool) -> tuple[str, ...]:
    """The keys a response counts under in theme_daily: `<theme>@<segment>` for each of its
    segments, with `_all@` always and `_commented@` when it has a comment."""
    names = [ALL, *([COMMENTED, *themes] if commented else ())]
    return tuple(f"{name}@{segment}" for segment in segments for name in names)


def split_key(key: str) -> tuple[str, str]:
    """(theme, segment) of a theme key: theme names hold no `@`."""
    theme, _, segment = key.partition("@")
    return theme, segment


# --- quality: precision and recall on a labelled set ---


@dataclass(frozen=True, slots=True)
class Score:
    theme: str
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positives + self.false_negatives
        return self.true_positives / wanted if wanted else 1.0


def evaluate(taxonomy: Taxonomy, labelled: Iterable[tuple[str, Sequence[str]]]) -> tuple[Score, list[Score]]:
    """Overall (micro-averaged over every (comment, theme) decision) and per theme."""
    counts = {t: [0, 0, 0] for t in taxonomy.themes}
    for comment, expected in labelled:
        found, wanted = set(taxonomy.tag(comment)), set(expected)
        for theme in found | wanted:
            cell = counts.setdefault(theme, [0, 0, 0])
            cell[0 if theme in found and theme in wanted else 1 if theme in found else 2] += 1
    per_theme = [Score(t, *c) for t, c in sorted(counts.items())]
    total = Score("overall", *(sum(s[i] for s in counts.values()) for i in range(3)))
    return total, per_theme


# --- the `nps themes` commands ---

LABELLED = Path(__file__).resolve().parents[1] / "tests" / "data" / "themes_eval.jsonl"


def check_command(path: str) -> int:
    try:
        taxonomy = load_taxonomy(path)
    except ThemesError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{path}: {len(taxonomy.themes)} themes, version {taxonomy.version}: ok")
    return 0


def evaluate_command(taxonomy_path: str | None, labelled_path: str | None) -> int:
    """Precision and recall per theme, as a Markdown table (docs/themes.md prints the shipped one's)."""
    try:
        taxonomy = load_taxonomy(taxonomy_path or os.environ.get("NPS_THEMES_TAXONOMY"))
        source = Path(labelled_path) if labelled_path else LABELLED
        rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
        labelled = [(str(r["comment"]), [str(t) for t in r["themes"]]) for r in rows]
    except ThemesError as exc:
        print(exc, file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cannot read the labelled set: {exc}", file=sys.stderr)
        return 1
    total, per_theme = evaluate(taxonomy, labelled)
    print(f"{len(labelled)} labelled comments, taxonomy {taxonomy.version}\n")
    print("| theme | precision | recall | found right | found wrong | missed |")
    print("|---|---|---|---|---|---|")
    for s in per_theme:
        print(
            f"| {s.theme} | {s.precision:.2f} | {s.recall:.2f} | {s.true_positives} | {s.false_positives} | {s.false_negatives} |"
        )
    print(f"| **overall** | **{total.precision:.3f}** | **{total.recall:.3f}** | | | |")
    return 0
