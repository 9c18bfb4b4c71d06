"""How many examples the property-based and fuzzing tests draw. `make test` draws enough to catch
the usual mistakes within its 8 minutes; `make test-deep` draws NPS_TEST_EXAMPLES_SCALE (5) times
as many, for a change to the consumers, the wire format or an API's parameters."""

from __future__ import annotations

import os


def examples(n: int) -> int:
    """n examples, scaled by NPS_TEST_EXAMPLES_SCALE (default 1)."""
    scale = float(os.environ.get("NPS_TEST_EXAMPLES_SCALE", "1"))
    if scale <= 0:
        raise ValueError(f"NPS_TEST_EXAMPLES_SCALE must be above 0, not {scale}")
    return max(1, round(n * scale))
