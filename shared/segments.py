"""The segment key's grammar, which every consumer of nps.scores reads: `all`, `dimension:value`, or
`a:1,b:2` for a combination (dimensions sorted). Split before each `name:`, so values may hold commas."""

from __future__ import annotations

import re

OVERALL = "all"
NAME = r"[a-z][a-z0-9_]{0,39}"
PART = re.compile(rf",(?={NAME}:)")


def parts(key: str) -> tuple[str, ...]:
    """`a:1,b:2` -> ('a:1', 'b:2'); `channel:web` -> ('channel:web',); `all` -> ()."""
    if key == OVERALL:
        return ()
    return tuple(PART.split(key))


def is_child(parent: str, candidate: str) -> bool:
    """`candidate` refines `parent` by one more dimension: `channel:web` of `all`,
    `product:atlas,region:eu` of `region:eu`."""
    mine, theirs = parts(parent), parts(candidate)
    return len(theirs) == len(mine) + 1 and set(mine) <= set(theirs)
