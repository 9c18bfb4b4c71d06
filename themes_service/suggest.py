"""`nps themes suggest`: candidate themes from the comments the taxonomy does not tag.

Pure (the command at the end reads the comments the themes consumer keeps, `theme_comments`).
How it works, in the order it runs (docs/themes.md says the same for users):

1. Every comment is tagged with the taxonomy; only those with no theme go on.
2. Each is normalised as tagging does, its language guessed from stop words among the taxonomy's
   languages, and cut into key phrases: runs of one to three words that neither start nor end with
   a stop word, stemmed (so "crashes" and "crashing" are one phrase), holding more than filler words
   ("great", "really"). Numbers are dropped.
3. Phrases in at least `min_count` comments are candidates; each stands for the set of comments
   that say it (a bit set, so overlaps cost microseconds).
4. Candidates whose comment sets mostly coincide (each covers more than half of the other) merge
   into one cluster: "dark mode", "dark" and "mode". This is suffix-tree clustering's merge rule
   (Zamir and Etzioni), which does not chain unrelated phrases through a common word.
5. Clusters are ranked by how many comments they hold; each comment counts in the first cluster
   that has it, and a cluster left with fewer than `min_count` is dropped.
6. Each cluster's phrases are ranked by class-based TF-IDF (c-TF-IDF, as BERTopic uses it): how
   often the phrase is in the cluster's comments, times log(1 + average cluster size / how often it
   is in all untagged comments). The first names the cluster; the YAML carries the phrases that are
   specific to it (most of the comments that say them are in it) and not contained in a better one.

Phrases are not synonyms: "night theme" and "dark mode" stay two candidates unless people write
them together. Example comments are redacted: emails, links and numbers (phones, orders, amounts).
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import yaml

from scoring_service.domain import Dimensions, parse_segment
from shared.db import make_engine
from shared.windows import parse_window, window
from themes_service.repository import comments_in
from themes_service.taxonomy import Taxonomy, ThemesError, load_taxonomy, normalise, stems


def _words(text: str) -> frozenset[str]:
    return frozenset(normalise(text).split())  # as comments' words are: "für" -> "fur"


STOP = {
    "en": _words(
        """a about above after again against all also am an and any are as at be because been before being
        below between both but by can could did do does doing done down during each even ever every few for
        from further get gets getting got had has have having he her here hers him his how i if im in into is
        it its itself ive just let lets me more most much my myself no nor not now of off on once only or
        other our ours out over own please same she should so some such than that thats the their theirs them
        then there these they this those through to too under until up us very was way we were what when
        where which while who whom why will with would you your yours yet still really one"""
    ),
    "de": _words(
        """aber alle allem allen aller alles als also am an ander andere anderem anderen anderer anderes auch
        auf aus bei bin bis bist da damit dann das dass dein deine dem den der des dessen dich die dies diese
        diesem diesen dieser dieses dir doch dort du durch ein eine einem einen einer eines er es etwas euch
        euer eure für gegen gewesen hab habe haben hat hatte hatten hier hin hinter ich ihr ihre im in indem
        ins ist jede jedem jeden jeder jedes jetzt kann kein keine können könnte machen man manche mehr mein
        meine mich mir mit muss nach nicht nichts noch nun nur ob oder ohne sehr sein seine sich sie sind so
        solche soll sollte sondern sonst um und uns unser unter viel vom von vor war waren warum was weil
        welche wenn wer werde werden wie wieder will wir wird wo wollen würde zu zum zur über immer schon"""
    ),
}
# Words that say how someone feels but not about what: never a phrase on their own.
FILLER = _words(
    """good great nice love like liked loves awesome amazing excellent fantastic perfect best better bad
    worse worst terrible awful horrible ok okay fine overall thanks thank product products app company
    thing things everything anything something lot lots bit little always never well use used using want
    wanted need needs make makes made keep recommend recommended happy unhappy satisfied disappointed
    experience time times day days week weeks month months year years honestly tbh meh hmm well yes yeah
    gut super toll schlecht danke produkt firma alles ehrlich"""
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_NUMBER = re.compile(r"\+?\d(?:[\d\s().,/-]*\d)?")
MAX_WORDS = 3
EXAMPLES = 3


def redact(text: str, limit: int = 200) -> str:
    """A comment fit to print: emails, links and numbers replaced, one line, at most `limit` characters."""
    out = _NUMBER.sub("[number]", _URL.sub("[link]", _EMAIL.sub("[email]", text)))
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class Candidate:
    key: str  # a theme name for the taxonomy (lower_snake_case)
    label: str
    language: str
    phrases: tuple[str, ...]  # what the YAML proposes, best first
    top_phrases: tuple[str, ...]  # the cluster's phrases by c-TF-IDF, for the table
    count: int  # untagged comments in this candidate (each comment in one candidate only)
    share_untagged: float
    share_commented: float
    examples: tuple[str, ...]  # redacted


@dataclass(frozen=True, slots=True)
class Suggestions:
    commented: int  # comments considered (not blank)
    untagged: int  # of which the taxonomy tags none
    min_count: int
    candidates: list[Candidate]


@dataclass(slots=True)
class _Doc:
    text: str
    language: str
    words: list[str]
    stems: list[str]


def _language(words: Sequence[str], languages: Sequence[str]) -> str:
    best, hits = languages[0], -1
    for code in languages:
        stop = STOP.get(code)
        found = sum(1 for w in words if stop is not None and w in stop)
        if found > hits:
            best, hits = code, found
    return best


def _phrases(doc: _Doc) -> Iterable[tuple[str, int, int]]:
    """(key, start, end) of every key phrase: `<language>:<stems joined by a space>`."""
    stop = STOP.get(doc.language, frozenset())
    words = doc.words
    for i, first in enumerate(words):
        if first in stop:
            continue
        for end in range(i + 1, min(i + MAX_WORDS, len(words)) + 1):
            last = words[end - 1]
            if last in stop:
                continue
            if all(w in stop or w in FILLER for w in words[i:end]):
                continue
            yield f"{doc.language}:{' '.join(doc.stems[i:end])}", i, end


def _bits(indices: Iterable[int], size: int) -> int:
    mask = bytearray((size + 7) // 8)
    for i in indices:
        mask[i >> 3] |= 1 << (i & 7)
    return int.from_bytes(mask, "little")


def _members(bits: int, limit: int) -> list[int]:
    """The first `limit` set positions of a bit set, lowest first."""
    out: list[int] = []
    while bits and len(out) < limit:
        low = bits & -bits
        out.append(low.bit_length() - 1)
        bits ^= low
    return out


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "_", normalise(text)).strip("_")[:36] or "theme"
    if not base[0].isalpha():
        base = f"t_{base}"[:36]
    key, n = base, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    taken.add(key)
    return key


def discover(
    comments: Iterable[str],
    taxonomy: Taxonomy,
    *,
    top: int = 10,
    min_count: int | None = None,
    candidates_considered: int = 300,
    max_phrases: int = 8,
) -> Suggestions:
    """Candidate themes from the comments the taxonomy does not tag (see the module's docstring)."""
    commented, docs = _untagged(comments, taxonomy)
    untagged = len(docs)
    floor = min_count if min_count is not None else max(5, math.ceil(0.005 * untagged))
    index = _Index.of(docs, floor, candidates_considered)
    if not index.frequent:
        return Suggestions(commented, untagged, floor, [])
    kept = _clusters(index, floor, top)
    if not kept:
        return Suggestions(commented, untagged, floor, [])
    average = sum(own.bit_count() for _, own in kept) / len(kept)
    taken = set(taxonomy.labels)
    found = [_candidate(index, members, own, average, max_phrases, taken, commented) for members, own in kept]
    found.sort(key=lambda c: (-c.count, c.key))
    return Suggestions(commented, untagged, floor, found)


def _untagged(comments: Iterable[str], taxonomy: Taxonomy) -> tuple[int, list[_Doc]]:
    """How many comments were not blank, and those the taxonomy does not tag, as documents."""
    languages = [language.code for language in taxonomy.languages]
    docs: list[_Doc] = []
    commented = 0
    for text in comments:
        if not text or not text.strip():
            continue
        commented += 1
        if taxonomy.tag(text):
            continue
        # No numbers, no single letters (what is left of "I'd", "it's").
        words = [w for w in normalise(text).split() if len(w) > 1 and not any(c.isdigit() for c in w)]
        if not words:
            continue
        language = _language(words, languages)
        docs.append(_Doc(text, language, words, stems(words, language)))
    return commented, docs


@dataclass(frozen=True, slots=True)
class _Index:
    """The phrases said in at least `floor` documents (the `considered` commonest), and for each the
    documents saying it, as a bit set over the documents."""

    docs: list[_Doc]
    per_doc: list[set[str]]  # each document's phrase keys
    frequent: list[str]
    bits: list[int]
    sizes: list[int]

    @classmethod
    def of(cls, docs: list[_Doc], floor: int, considered: int) -> _Index:
        df: Counter[str] = Counter()
        per_doc: list[set[str]] = []
        for doc in docs:
            keys = {key for key, _, _ in _phrases(doc)}
            per_doc.append(keys)
            df.update(keys)
        frequent = [k for k, n in df.most_common(considered) if n >= floor]
        index = {k: i for i, k in enumerate(frequent)}
        postings: list[list[int]] = [[] for _ in frequent]
        for d, keys in enumerate(per_doc):
            for key in keys:
                i = index.get(key)
                if i is not None:
                    postings[i].append(d)
        return cls(docs, per_doc, frequent, [_bits(p, len(docs)) for p in postings], [len(p) for p in postings])

    def surface(self, surfaces: dict[str, str], i: int) -> str:
        """Phrase i as people wrote it most often (else its stems)."""
        return surfaces.get(self.frequent[i], self.frequent[i].split(":", 1)[1])


def _clusters(index: _Index, floor: int, top: int) -> list[tuple[list[int], int]]:
    """Phrases whose documents cover more than half of each other's merged (union-find); the largest
    clusters first, each keeping the documents no larger one claimed, if at least `floor`."""
    bits, sizes, n = index.bits, index.sizes, len(index.frequent)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            both = (bits[i] & bits[j]).bit_count()
            if 2 * both > sizes[i] and 2 * both > sizes[j]:
                parent[root(j)] = root(i)
    clusters: dict[int, list[int]] = {}
    for i in range(n):
        clusters.setdefault(root(i), []).append(i)
    merged = []
    for members in clusters.values():
        covered = 0
        for i in members:
            covered |= bits[i]
        merged.append((covered.bit_count(), min(members), members, covered))
    merged.sort(key=lambda c: (-c[0], c[1]))

    claimed = 0
    kept: list[tuple[list[int], int]] = []
    for _, _, members, covered in merged:
        own = covered & ~claimed
        if own.bit_count() < floor:
            continue
        claimed |= own
        kept.append((members, own))
        if len(kept) == top:
            break
    return kept


def _proposed(index: _Index, own: int, considered: list[tuple[float, int, int]], max_phrases: int) -> list[int]:
    """The YAML's phrases, greedily: the best by weight that is specific (most comments saying it are
    in this cluster) and adds at least a tenth of the cluster's comments to what the phrases before it
    already match. A phrase inside a longer one that says nearly all of it ("calendar" in "calendar
    view") gives way to the longer: more precise in a taxonomy."""
    bits, sizes, n_own = index.bits, index.sizes, own.bit_count()
    stem_of = {i: f" {index.frequent[i].split(':', 1)[1]} " for _, _, i in considered}
    proposed: list[int] = []
    matched = 0
    for _, inside, shorter in considered:
        longer = [
            (len(stem_of[j]), j)
            for _, other, j in considered
            if j != shorter and stem_of[shorter] in stem_of[j] and 10 * other >= 9 * inside
        ]
        i = max(longer)[1] if longer else shorter
        if i in proposed or (bits[i] & own).bit_count() * 5 < sizes[i] * 3:
            continue
        if 10 * (bits[i] & own & ~matched).bit_count() < n_own:
            continue
        proposed.append(i)
        matched |= bits[i]
        if len(proposed) == max_phrases:
            break
    return proposed


def _candidate(
    index: _Index, members: list[int], own: int, average: float, max_phrases: int, taken: set[str], commented: int
) -> Candidate:
    """One cluster as a candidate theme: its phrases, its name, its counts and examples."""
    frequent, n_own = index.frequent, own.bit_count()
    weights = []
    for i in range(len(frequent)):
        inside = (index.bits[i] & own).bit_count()
        if inside:
            weights.append((inside / n_own * math.log(1 + average / index.sizes[i]), inside, i))
    weights.sort(key=lambda w: (-w[0], frequent[w[2]]))
    ranked = [i for _, _, i in weights[:max_phrases]]
    considered = weights[: max_phrases * 2]
    surfaces = _surfaces(index.docs, index.per_doc, own, {frequent[i] for _, _, i in considered})
    proposed = _proposed(index, own, considered, max_phrases)
    # The name: the best phrase, or a longer one of the top ones nearly as common in the cluster.
    best_inside = weights[0][1]
    named = max(
        (w for w in weights[:max_phrases] if 10 * w[1] >= 7 * best_inside),
        key=lambda w: (len(frequent[w[2]].split()), w[1]),
    )[2]
    name = index.surface(surfaces, named)
    examples = _examples(index.docs, index.per_doc, own, {frequent[i] for i in members} | {frequent[i] for i in ranked})
    untagged = len(index.docs)
    return Candidate(
        key=_slug(name, taken),
        label=name[:1].upper() + name[1:],
        language=frequent[named].split(":", 1)[0],
        phrases=tuple(index.surface(surfaces, i) for i in proposed),
        top_phrases=tuple(index.surface(surfaces, i) for i in ranked),
        count=n_own,
        share_untagged=n_own / untagged,
        share_commented=n_own / commented,
        examples=tuple(redact(index.docs[d].text) for d in examples),
    )


def _surfaces(docs: Sequence[_Doc], per_doc: Sequence[set[str]], own: int, keys: set[str]) -> dict[str, str]:
    """The commonest written form of each phrase, over (up to 2,000 of) the cluster's comments."""
    seen: dict[str, Counter[str]] = {k: Counter() for k in keys}
    for d in _members(own, 2_000):
        if not keys & per_doc[d]:
            continue
        for key, start, end in _phrases(docs[d]):
            if key in seen:
                seen[key][" ".join(docs[d].words[start:end])] += 1
    return {k: c.most_common(1)[0][0] for k, c in seen.items() if c}


def _examples(docs: Sequence[_Doc], per_doc: Sequence[set[str]], own: int, keys: set[str]) -> list[int]:
    """Three of the cluster's comments that say most of its phrases, shorter first."""
    pool = _members(own, 500)
    pool.sort(key=lambda d: (-len(per_doc[d] & keys), len(docs[d].text), d))
    chosen: list[int] = []
    said: set[str] = set()
    for d in pool:  # three different comments, not one said three times
        if " ".join(docs[d].words) not in said:
            said.add(" ".join(docs[d].words))
            chosen.append(d)
            if len(chosen) == EXAMPLES:
                break
    return chosen


# --- output ---


def table(found: Suggestions, heading: str) -> str:
    lines = [
        heading,
        f"{found.commented:,} comments, {found.untagged:,} with no theme of the taxonomy; "
        f"candidates need {found.min_count:,} comments",
        "",
    ]
    if not found.candidates:
        lines.append("no candidate: no phrase is said often enough among the untagged comments")
        return "\n".join(lines)
    for rank, c in enumerate(found.candidates, 1):
        lines.append(
            f"{rank}. {c.label} ({c.key}, {c.language}): {c.count:,} comments, "
            f"{100 * c.share_untagged:.1f}% of the untagged, {100 * c.share_commented:.1f}% of all"
        )
        lines.append(f"   phrases: {', '.join(c.top_phrases)}")
        for example in c.examples:
            lines.append(f"   - {example}")
    return "\n".join(lines)


def as_yaml(found: Suggestions, heading: str) -> str:
    """The candidates in the taxonomy's own format: paste the themes under its `themes:`."""
    themes = {
        c.key: {"label": c.label, "phrases": {c.language: list(c.phrases)}} for c in found.candidates if c.phrases
    }
    body = yaml.safe_dump({"themes": themes}, sort_keys=False, allow_unicode=True, width=100)
    notes = [f"# {heading}"]
    for c in found.candidates:
        notes.append(f"# {c.key}: {c.count:,} comments ({100 * c.share_untagged:.1f}% of the untagged)")
    return "\n".join(notes) + "\n" + body


def heading(window: str, segment: str, category: str | None, as_of: date) -> str:
    return f"nps themes suggest: window {window} to {as_of.isoformat()}, segment {segment}" + (
        f", {category}s" if category else ""
    )


CATEGORY_SCORES = {"promoter": (9, 10), "passive": (7, 8), "detractor": (0, 6)}


@dataclass(frozen=True, slots=True)
class Request:
    window: str = "30d"
    segment: str = "all"
    category: str | None = None
    as_of: date | None = None
    taxonomy: str | None = None
    top: int = 10
    min_count: int | None = None
    output: str = "table"


async def run(database_url: str, request: Request, dimensions: Dimensions) -> int:
    """`nps themes suggest`: read the window's comments, print the candidates. 2: a bad argument."""
    try:
        days = window(request.as_of or datetime.now(UTC).date(), parse_window(request.window))
        segment = parse_segment(request.segment, dimensions)
        if request.top < 1 or (request.min_count is not None and request.min_count < 1):
            raise ValueError("--top and --min-count are at least 1")
        taxonomy = load_taxonomy(request.taxonomy or os.environ.get("NPS_THEMES_TAXONOMY"))
    except (ValueError, ThemesError) as exc:
        print(f"nps themes suggest: {exc}", file=sys.stderr)
        return 2
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            comments = await comments_in(
                conn, segment, days, CATEGORY_SCORES[request.category] if request.category else (0, 10)
            )
    finally:
        await engine.dispose()
    found = discover(comments, taxonomy, top=request.top, min_count=request.min_count)
    head = heading(request.window, segment, request.category, days.last)
    sys.stdout.write(as_yaml(found, head) if request.output == "yaml" else table(found, head) + "\n")
    return 0
