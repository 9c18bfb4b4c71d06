"""Theme tagging: normalisation, stemming, typos, negation, patterns, the taxonomy's checks, and
quality on the shipped labelled set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from themes_service.taxonomy import ThemesError, evaluate, load_taxonomy, normalise

TAXONOMY = load_taxonomy()
EVAL = Path(__file__).resolve().parents[1] / "data" / "themes_eval.jsonl"


def test_normalise_folds_case_accents_punctuation_and_n_t() -> None:
    assert normalise("Délivery   TOOK 3 wks!!! (Crème)") == "delivery took 3 wks creme"
    assert normalise("It doesn't work; can\u2019t log in") == "it does not work ca not log in"
    assert normalise("Straße, ÜBER") == "strasse uber"
    assert normalise("—…") == ""


@pytest.mark.parametrize(
    ("comment", "themes"),
    [
        ("Shipping took ages", ("delivery",)),  # stemming: shipping -> ship
        ("They shipped it twice", ("delivery",)),
        ("delivry was late", ("delivery",)),  # one letter missing
        ("paymnet failed at checkout", ("bugs", "price")),  # two letters swapped
        ("The app is slow and crashes", ("bugs", "performance")),  # several themes
        ("not slow at all", ()),  # negated pain
        ("no bugs, never crashed", ()),
        ("it is slow, not fast", ("performance",)),  # the negation covers two words before, not after
        ("Die Lieferung kam zu spät", ("delivery",)),  # the second language
        ("Kein Absturz bisher", ()),
        ("where is my order??", ("delivery",)),  # a pattern
        ("The website is really fast", ("performance",)),
        ("Customer service was great", ("support",)),  # "customer" is not customisation
        ("", ()),
        (None, ()),
    ],
)
def test_tagging(comment: str | None, themes: tuple[str, ...]) -> None:
    assert TAXONOMY.tag(comment) == themes


@given(st.text(max_size=300))
def test_any_text_tags_without_error_to_known_themes(text: str) -> None:
    assert set(TAXONOMY.tag(text)) <= set(TAXONOMY.themes)


def test_tags_do_not_depend_on_case_or_punctuation() -> None:
    assert TAXONOMY.tag("THE PACKAGE NEVER ARRIVED!!!") == TAXONOMY.tag("the package never arrived")


def test_a_bad_taxonomy_names_file_theme_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "themes.yaml"
    bad.write_text(
        """
version: t-1
languages: [en, xx]
themes:
  Delivery:
    label: Delivery
    phrases: {en: [shipping]}
  empty:
    label: Nothing
  price:
    label: Price
    phrases: {en: [price], fr: [prix]}
    patterns: {en: ['(unclosed']}
    negatable: [cheap]
"""
    )
    with pytest.raises(ThemesError) as info:
        load_taxonomy(bad)
    message = str(info.value)
    for expected in (
        "languages: 'xx' is not one of",
        "theme 'Delivery': a name is lower_snake_case",
        "theme 'empty': no phrases and no patterns",
        "theme 'price': language 'fr' is not in `languages`",
        "theme 'price': patterns.en: '(unclosed'",
        "theme 'price': negatable: 'cheap' is not one of its phrases",
    ):
        assert expected in message, message
    assert message.startswith(str(bad))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("version: t\nlanguages: [en]\nthemes: {a: {label: A, phrases: {en: [x]}, colour: red}}\n")
    with pytest.raises(ThemesError, match=r"themes\.a\.colour: Extra inputs are not permitted"):
        load_taxonomy(unknown)
    with pytest.raises(ThemesError, match="cannot read it"):
        load_taxonomy(tmp_path / "missing.yaml")


def test_the_default_taxonomy_meets_its_quality_bar_on_the_labelled_set() -> None:
    """docs/themes.md prints the per-theme table; this keeps the overall figures from sliding."""
    rows = [json.loads(line) for line in EVAL.read_text().splitlines()]
    assert len(rows) >= 600 and any(not r["themes"] for r in rows)
    total, per_theme = evaluate(TAXONOMY, [(r["comment"], r["themes"]) for r in rows])
    assert total.precision >= 0.85 and total.recall >= 0.75, total
    assert {s.theme for s in per_theme} == set(TAXONOMY.themes)


def test_the_commands_check_a_taxonomy_and_evaluate_a_labelled_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli import main

    assert (
        main(["themes", "check", str(Path(__file__).resolve().parents[2] / "themes_service" / "default_themes.yaml")])
        == 0
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\n")
    assert main(["themes", "check", str(bad)]) == 1
    assert "themes: Field required" in capsys.readouterr().err
    labelled = tmp_path / "mine.jsonl"
    labelled.write_text(
        '{"comment": "the parcel never arrived", "themes": ["delivery"]}\n'
        '{"comment": "too slow", "themes": ["price"]}\n'
    )
    assert main(["themes", "evaluate", "--labelled", str(labelled)]) == 0
    out = capsys.readouterr().out
    assert "2 labelled comments" in out and "| delivery | 1.00 | 1.00 | 1 | 0 | 0 |" in out
    assert "| performance | 0.00 | 1.00 | 0 | 1 | 0 |" in out and "| price | 1.00 | 0.00 | 0 | 0 | 1 |" in out
    labelled.write_text("not json\n")
    assert main(["themes", "evaluate", "--labelled", str(labelled)]) == 1


def test_near_phrases_are_remembered_per_stem_and_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each language keeps `_near`'s answer per stem (typos are looked up once), emptied when full;
    what is tagged is the same with the memory cold, warm, or emptied along the way."""
    from themes_service import taxonomy

    comments = ["delivry was late", "paymnet failed at checkout", "the parcell arrived", "checkuot broke"] * 3
    cold = [taxonomy.load_taxonomy().tag(c) for c in comments]
    monkeypatch.setattr(taxonomy, "NEAR_CACHED", 3)
    small = taxonomy.load_taxonomy()
    assert [small.tag(c) for c in comments] == cold
    assert cold[0] == ("delivery",) and cold[1] == ("bugs", "price")
    assert all(0 < len(language.near) <= 3 for language in small.languages)
