"""A comment stream with three themes the default taxonomy does not know (offline use, user
permissions, a calendar view), mixed into the labelled evaluation set's comments and some filler
praise: what `nps themes suggest` must find (tests/unit/test_suggest.py, `make bench --only themes`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

LABELLED = Path(__file__).with_name("themes_eval.jsonl")

HIDDEN: dict[str, list[str]] = {
    "offline": [
        "No offline mode, useless on the train.",
        "Offline mode would make my commute productive.",
        "Without offline access I cannot work on flights.",
        "Give us an offline mode for field work.",
        "It is unusable offline in the warehouse.",
        "We lose everything when offline, an offline mode is overdue.",
        "Offline access for the mobile version, please.",
        "Offline mode is the one thing holding us back.",
        "Our technicians need offline access on site.",
        "Working offline is impossible right now.",
    ],
    "permissions": [
        "User permissions are far too coarse for our agency.",
        "We need role permissions for freelancers.",
        "Admin permissions cannot be delegated.",
        "Guests see everything, user permissions are missing.",
        "Granular user permissions would let us invite clients.",
        "Permissions per project are a must for us.",
        "Read-only permissions for auditors, please.",
        "Managing permissions for a large team is painful.",
    ],
    "calendar": [
        "A calendar view for deadlines would help.",
        "The calendar view is what we miss most.",
        "Show our tasks in a calendar view.",
        "Calendar view is hard to read on small screens.",
        "Planning without a calendar view is guesswork.",
        "Weekly calendar view for the whole team, please.",
    ],
}
FILLER = [
    "Great product!",
    "Love it.",
    "Very happy overall.",
    "Keep up the good work.",
    "Thanks, all good.",
    "Nothing to add.",
    "Would recommend to friends.",
    "Solid tool for our team.",
    "Does what it says.",
    "Really good so far.",
]
PREFIXES = ["", "", "", "Honestly, ", "Quick note: ", "For us ", "As a manager: ", "Hmm. "]
SUFFIXES = ["", "", "", " Otherwise fine.", " Thanks!", " Mail me at jo.doe@example.com", " Call +1 555 0100."]


def corpus(n: int, seed: int = 7, hidden_share: float = 0.15) -> tuple[list[str], list[str | None]]:
    """n comments and, for each, the hidden theme it is about (None: a labelled or filler comment).
    Each hidden theme gets a third of `hidden_share`; 15% of comments are filler, the rest labelled."""
    rng = random.Random(seed)
    labelled = [json.loads(line)["comment"] for line in LABELLED.read_text().splitlines() if line.strip()]
    themes = sorted(HIDDEN)
    comments: list[str] = []
    truth: list[str | None] = []
    for _ in range(n):
        draw = rng.random()
        if draw < hidden_share:
            theme = themes[int(draw / hidden_share * len(themes))]
            core = rng.choice(HIDDEN[theme])
            prefix = rng.choice(PREFIXES)
            comments.append(prefix + (core[0].lower() + core[1:] if prefix else core) + rng.choice(SUFFIXES))
            truth.append(theme)
        elif draw < hidden_share + 0.15:
            comments.append(rng.choice(FILLER))
            truth.append(None)
        else:
            comments.append(rng.choice(labelled))
            truth.append(None)
    return comments, truth
