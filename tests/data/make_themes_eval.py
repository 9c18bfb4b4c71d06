"""Writes tests/data/themes_eval.jsonl: each hand-labelled comment of themes_eval_base.py in four
forms: as written; with one typo (two neighbouring letters swapped, or one dropped, in one word of
six letters or more); wrapped in filler; lower-case without punctuation. Seeded: rerunning it
writes the same file. `python -m tests.data.make_themes_eval`"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from tests.data.themes_eval_base import BASE

OUT = Path(__file__).with_name("themes_eval.jsonl")
FILLERS = [("Honestly, ", ""), ("", " Overall I'd say 7/10."), ("Well... ", " That's all."), ("TBH ", " Thanks.")]


def typo(text: str, rng: random.Random) -> str:
    words = [m for m in re.finditer(r"[A-Za-zÄÖÜäöüß]{6,}", text)]
    if not words:
        return text
    m = rng.choice(words)
    word = m.group()
    i = rng.randrange(1, len(word) - 1)
    changed = word[:i] + word[i + 1] + word[i] + word[i + 2 :] if rng.random() < 0.5 else word[:i] + word[i + 1 :]
    return text[: m.start()] + changed + text[m.end() :]


def forms(text: str, rng: random.Random) -> list[tuple[str, str]]:
    before, after = rng.choice(FILLERS)
    flat = re.sub(r"[^\w\s]", "", text).lower()
    return [("as written", text), ("typo", typo(text, rng)), ("filler", before + text + after), ("flat", flat)]


def main() -> None:
    rng = random.Random(14)
    lines = []
    for i, (text, themes) in enumerate(BASE):
        for form, variant in forms(text, rng):
            lines.append(
                json.dumps(
                    {"id": f"{i:03d}-{form.replace(' ', '_')}", "comment": variant, "themes": sorted(themes)},
                    ensure_ascii=False,
                )
            )
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}: {len(lines)} comments ({len(BASE)} hand-written, in four forms)")


if __name__ == "__main__":
    main()
