"""`nps themes suggest`'s discovery, on a stream with three themes the default taxonomy does not
know (tests/data/suggest_corpus.py): it finds them, its YAML works when pasted into the taxonomy,
and what it prints is redacted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.data.suggest_corpus import HIDDEN, corpus
from themes_service import suggest
from themes_service.taxonomy import DEFAULT_THEMES, load_taxonomy

TAXONOMY = load_taxonomy()
COMMENTS, TRUTH = corpus(3_000)
FOUND = suggest.discover(COMMENTS, TAXONOMY)


def test_the_three_unconfigured_themes_are_the_top_candidates() -> None:
    top = [c.key for c in FOUND.candidates[:3]]
    assert sorted(top) == ["calendar_view", "offline", "permissions"], top
    hidden = sum(1 for t in TRUTH if t is not None)
    assert sum(c.count for c in FOUND.candidates[:3]) >= 0.95 * hidden


def test_counts_and_shares_add_up() -> None:
    assert FOUND.commented == len(COMMENTS)
    assert FOUND.untagged == sum(1 for c in COMMENTS if not TAXONOMY.tag(c))
    assert sum(c.count for c in FOUND.candidates) <= FOUND.untagged  # each comment in one candidate
    for c in FOUND.candidates:
        assert c.count >= FOUND.min_count
        assert c.share_untagged == pytest.approx(c.count / FOUND.untagged)
        assert c.share_commented == pytest.approx(c.count / FOUND.commented)
        assert 1 <= len(c.examples) <= 3 and len(set(c.examples)) == len(c.examples)
    assert [c.count for c in FOUND.candidates] == sorted((c.count for c in FOUND.candidates), reverse=True)


def test_the_yaml_pasted_into_the_taxonomy_tags_the_new_themes(tmp_path: Path) -> None:
    proposed = yaml.safe_load(suggest.as_yaml(FOUND, "heading"))["themes"]
    merged = yaml.safe_load(DEFAULT_THEMES.read_text())
    new = {key: proposed[key] for key in ("offline", "permissions", "calendar_view")}
    merged["themes"].update(new)
    path = tmp_path / "themes.yaml"
    path.write_text(yaml.safe_dump(merged, allow_unicode=True))
    taxonomy = load_taxonomy(path)  # it compiles: the names, labels and phrases are valid
    wanted = {"offline": "offline", "permissions": "permissions", "calendar": "calendar_view"}
    for hidden, theme in wanted.items():
        about = [c for c, t in zip(COMMENTS, TRUTH, strict=True) if t == hidden]
        recall = sum(1 for c in about if theme in taxonomy.tag(c)) / len(about)
        assert recall >= 0.9, (hidden, recall)
    others = [c for c, t in zip(COMMENTS, TRUTH, strict=True) if t is None]
    wrong = sum(1 for c in others if set(taxonomy.tag(c)) & set(new))
    assert wrong <= 0.01 * len(others)


def test_examples_and_the_table_are_redacted() -> None:
    printed = suggest.table(FOUND, "heading")
    assert "@" not in printed and "555" not in printed and "0100" not in printed
    assert any("[email]" in e or "[number]" in e for c in FOUND.candidates for e in c.examples)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Mail jo.doe+nps@example.co.uk today", "Mail [email] today"),
        ("Order 12-3456/78 never came", "Order [number] never came"),
        ("Call +44 (0)20 7946 0958 now", "Call [number] now"),
        ("See https://example.com/x?id=9 or www.example.org", "See [link] or [link]"),
        ("Two\nlines   here", "Two lines here"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert suggest.redact(text) == shown


def test_redact_shortens_a_long_comment() -> None:
    assert len(suggest.redact("word " * 100, limit=50)) == 50


def test_nothing_to_suggest_when_the_taxonomy_tags_everything() -> None:
    found = suggest.discover(["Delivery was late", "Too expensive", "", "   "], TAXONOMY)
    assert (found.commented, found.untagged, found.candidates) == (2, 0, [])
    assert "no candidate" in suggest.table(found, "heading")


def test_the_floor_and_top_are_respected() -> None:
    found = suggest.discover(COMMENTS, TAXONOMY, top=2, min_count=400)
    assert len(found.candidates) <= 2 and all(c.count >= 400 for c in found.candidates)
    assert found.min_count == 400


def test_filler_and_stop_words_are_never_a_theme_alone() -> None:
    comments = ["Great product, love it!"] * 20 + ["It is really very good."] * 20
    assert suggest.discover(comments, TAXONOMY).candidates == []


def test_a_german_comment_is_cut_into_german_phrases() -> None:
    comments = [f"Die Kalenderansicht für das Team ist zu klein {n}" for n in range(10)]
    found = suggest.discover(comments, TAXONOMY, min_count=5)
    assert found.candidates[0].language == "de"
    assert "kalenderansicht" in found.candidates[0].phrases


def test_every_hidden_theme_text_is_untagged_by_the_default_taxonomy() -> None:
    """The corpus is only a test of discovery if the taxonomy really misses these themes."""
    for theme, lines in HIDDEN.items():
        for line in lines:
            assert TAXONOMY.tag(line) == (), (theme, line)
